"""piade_lib: reference reproduction of PIADE (Mishra, Piciarelli, Foresti, IJNS 2020).

Modules (one idea each):
    presets     the two readings of the method ("paper", "authors_code"), single source of truth
    weights     torchvision pretrained weights with clear offline errors
    model       the PIADE network (SE-ResNet encoder, pyramid pooling, capsules, routing, decoder)
    losses      MSE, perceptual (VGG11), SSIM; training loss and per-image anomaly score
    data        datasets, one-class protocols, preprocessing, manifests
    train       resumable training runs and run folders
    evaluate    anomaly scores, AUROC with bootstrap intervals, pixel maps
    baselines   OC-SVM, KDE and convolutional autoencoders under the same protocol
    paper_results  the numbers the paper reports (Tables 2-4, Figure 4)
    reporting   tables and figures beside the paper's numbers
"""

__version__ = "0.1.0"
