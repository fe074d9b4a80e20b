"""The numbers the PIADE paper (Mishra, Piciarelli, Foresti, IJNS 2020) reports, in one place.

Transcribed from the paper's Tables 2, 3 and 4 and the ablation text (section 6). Nothing
else in the project may hard-code these values: reporting and notebooks read them from here.
``tests/test_reporting.py`` recomputes every table's "Mean" row from its per-class values as
a transcription check.

Where each baseline column comes from (what the paper says, and what that source holds):

* Table 2 (CIFAR-10): "Comparative results taken from literature [4]" = Abati et al., *Latent
  Space Autoregression for Novelty Detection*, CVPR 2019 (LSA), its CIFAR-10 table (OC SVM, KDE,
  DAE, VAE, Pix CNN, GAN, LSA).
* Table 3 (MVTec AD): "Comparative results taken from [8]" = Bergmann et al., *MVTec AD*, CVPR
  2019 (AE (SSIM), AE (L2), AnoGAN, CNN Feature Dictionary). Caution: that paper reports no
  image-level AUROC; its image-level measure is a classification accuracy with a threshold chosen
  on held-out normal images, and its ROC AUC is pixel-level. The baseline numbers of Table 3
  are therefore probably not AUROCs (see shared/notes/protocols.md, Table 3 item 5); we copy
  them as printed and say so wherever they are shown.
* Table 4 (COIL-100): only the mean over 100 normality models is reported; GPND from
  Pidhorskyi et al. NeurIPS 2018 [27], OCGAN from Perera et al. CVPR 2019 [31], DCAE from
  Sakurada & Yairi MLSDA 2014 [32], as cited in the table's "Reference" column.
* Figure 4 (ablation, 1 vs 2 instantiation vectors, MVTec): a bar chart whose values are not
  given numerically in the text. The text states only: "In all the categories, the two vectors
  approach performed better than one vector with average of 9% improvement." Per-category bar
  heights are therefore not available here and are never invented.
"""

from __future__ import annotations

import pandas as pd

PAPER = (
    "Mishra, Piciarelli, Foresti. A neural network for image anomaly detection with deep "
    "pyramidal representations and dynamic routing. IJNS 30(10), 2020. doi:10.1142/S0129065720500604"
)

# ---------------------------------------------------------------------------------------------
# Table 2: CIFAR-10, AUC per normal class (0..9). Column "Ours" is PIADE.
# ---------------------------------------------------------------------------------------------
TABLE2_COLUMNS = ("OC SVM", "KDE", "DAE", "VAE", "Pix CNN", "GAN", "LSA", "Ours")
_TABLE2_ROWS = {
    #      OC SVM  KDE    DAE    VAE    PixCNN GAN    LSA    Ours
    "0": (0.630, 0.658, 0.718, 0.688, 0.788, 0.708, 0.735, 0.751),
    "1": (0.440, 0.520, 0.401, 0.403, 0.428, 0.458, 0.580, 0.550),
    "2": (0.649, 0.657, 0.685, 0.679, 0.617, 0.664, 0.690, 0.708),
    "3": (0.487, 0.497, 0.556, 0.528, 0.574, 0.510, 0.542, 0.609),
    "4": (0.735, 0.727, 0.740, 0.748, 0.511, 0.722, 0.761, 0.805),
    "5": (0.500, 0.496, 0.547, 0.519, 0.571, 0.505, 0.546, 0.645),
    "6": (0.725, 0.758, 0.642, 0.695, 0.422, 0.707, 0.751, 0.729),
    "7": (0.533, 0.564, 0.497, 0.500, 0.454, 0.471, 0.535, 0.651),
    "8": (0.649, 0.680, 0.724, 0.700, 0.715, 0.713, 0.717, 0.771),
    "9": (0.508, 0.540, 0.389, 0.398, 0.426, 0.458, 0.548, 0.532),
}
TABLE2_MEAN = (0.586, 0.610, 0.590, 0.586, 0.551, 0.592, 0.641, 0.675)
TABLE2_SOURCE = "IJNS 2020 Table 2; baselines copied by the paper from Abati et al., LSA, CVPR 2019 [ref. 4]"
# CIFAR-10 class index -> torchvision class name (the paper labels rows 0..9)
CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# ---------------------------------------------------------------------------------------------
# Table 3: MVTec AD, "AUC" per category, in the paper's row order. Column "Ours" is PIADE.
# ---------------------------------------------------------------------------------------------
TABLE3_COLUMNS = ("AE (SSIM)", "AE (L2)", "AnoGAN", "CNN Feat. Dict.", "Ours")
_TABLE3_ROWS = {
    #              AE(SSIM) AE(L2) AnoGAN CNNFD  Ours
    "carpet": (0.665, 0.495, 0.490, 0.625, 0.573),
    "grid": (0.690, 0.775, 0.510, 0.450, 0.587),
    "leather": (0.460, 0.440, 0.515, 0.670, 0.591),
    "tile": (0.505, 0.770, 0.510, 0.705, 0.560),
    "wood": (0.830, 0.735, 0.680, 0.835, 0.978),
    "bottle": (0.875, 0.795, 0.690, 0.530, 0.968),
    "cable": (0.610, 0.555, 0.525, 0.605, 0.871),
    "capsule": (0.605, 0.620, 0.580, 0.405, 0.771),
    "hazelnut": (0.535, 0.885, 0.495, 0.485, 0.949),
    "metal_nut": (0.540, 0.725, 0.495, 0.645, 0.672),
    "pill": (0.600, 0.615, 0.620, 0.455, 0.732),
    "screw": (0.505, 0.685, 0.345, 0.430, 0.619),
    "toothbrush": (0.740, 0.985, 0.565, 0.515, 0.956),
    "transistor": (0.515, 0.710, 0.665, 0.575, 0.872),
    "zipper": (0.800, 0.800, 0.590, 0.535, 0.738),
}
TABLE3_MEAN = (0.632, 0.706, 0.552, 0.564, 0.762)
TABLE3_SOURCE = (
    "IJNS 2020 Table 3; baselines copied by the paper from Bergmann et al., MVTec AD, CVPR 2019 [ref. 8], "
    "which reports no image-level AUROC (its image-level figure is a thresholded accuracy): "
    "the baseline columns are probably not AUROCs"
)

# ---------------------------------------------------------------------------------------------
# Table 4: COIL-100, mean AUC over the 100 one-class models (no per-object values reported).
# ---------------------------------------------------------------------------------------------
TABLE4_MEAN = {"GPND": 0.979, "OCGAN": 0.995, "DCAE": 0.908, "Ours": 0.998}
TABLE4_REFERENCES = {
    "GPND": "Pidhorskyi et al., NeurIPS 2018 [ref. 27]",
    "OCGAN": "Perera et al., CVPR 2019 [ref. 31]",
    "DCAE": "Sakurada & Yairi, MLSDA 2014 [ref. 32]",
    "Ours": "PIADE, IJNS 2020",
}
TABLE4_SOURCE = "IJNS 2020 Table 4 and section 4 text; only means over the 100 objects are reported"
TABLE4_TEXT_CLAIMS = ("Out of 100 classes more than 50 classes achieved AUC score of 1.",)

# ---------------------------------------------------------------------------------------------
# Figure 4: ablation, one vs two instantiation vectors on six MVTec categories.
# ---------------------------------------------------------------------------------------------
FIGURE4_CATEGORIES = ("bottle", "capsule", "hazelnut", "carpet", "leather", "wood")
FIGURE4_CLAIM = (
    "In all the categories, the two vectors approach performed better than one vector with average of 9% improvement."
)
FIGURE4_MEAN_IMPROVEMENT = 0.09  # "average of 9% improvement" (absolute or relative: not stated)
FIGURE4_TWO_BETTER_IN_ALL = True
FIGURE4_VALUES_AVAILABLE = False  # the bar heights are only drawn, never printed: not transcribed
FIGURE4_SOURCE = (
    "IJNS 2020 section 6 and Fig. 4; the per-category AUCs are shown only as bars and are not "
    "available numerically, so they are left empty"
)

# ---------------------------------------------------------------------------------------------
# One-class MNIST (the ICPR 2021 version's dataset). The ICPR paper's own per-digit numbers are not
# available here (only its abstract), so our MNIST table stands beside the published results of the
# methods the LSA paper compares, under the same protocol (train on the normal digit's train
# images, test on the whole test split).
# ---------------------------------------------------------------------------------------------
MNIST_LSA_COLUMNS = ("OC SVM", "KDE", "DAE", "VAE", "Pix CNN", "GAN", "LSA")
_MNIST_LSA_ROWS = {
    #      OC SVM  KDE    DAE    VAE    PixCNN GAN    LSA
    "0": (0.988, 0.885, 0.894, 0.997, 0.531, 0.926, 0.993),
    "1": (0.999, 0.996, 0.999, 0.999, 0.995, 0.995, 0.999),
    "2": (0.902, 0.710, 0.792, 0.936, 0.476, 0.805, 0.959),
    "3": (0.950, 0.693, 0.851, 0.959, 0.517, 0.818, 0.966),
    "4": (0.955, 0.844, 0.888, 0.973, 0.739, 0.823, 0.956),
    "5": (0.968, 0.776, 0.819, 0.964, 0.542, 0.803, 0.964),
    "6": (0.978, 0.861, 0.944, 0.993, 0.592, 0.890, 0.994),
    "7": (0.965, 0.884, 0.922, 0.976, 0.789, 0.898, 0.980),
    "8": (0.853, 0.669, 0.740, 0.923, 0.340, 0.817, 0.953),
    "9": (0.955, 0.825, 0.917, 0.976, 0.662, 0.887, 0.981),
}
MNIST_LSA_MEAN = (0.951, 0.814, 0.877, 0.969, 0.618, 0.866, 0.975)
MNIST_LSA_SOURCE = (
    "Abati, Porrello, Calderara, Cucchiara. Latent Space Autoregression for Novelty Detection. CVPR 2019 "
    "(arXiv:1807.01653v2), Table 1, MNIST part (one digit normal; train on its train images, test on the "
    "whole test split); the same source as the baselines of the IJNS paper's Table 2. Transcribed from the "
    "paper; the stored copies reachable from this project's machines did not include the table, so the "
    "transcription has not been checked against a second copy (tests recompute each mean row)"
)

# ---------------------------------------------------------------------------------------------
# Accessors
# ---------------------------------------------------------------------------------------------
# The dataset each table's numbers were measured on (a re-run on another dataset, e.g. an offline
# stand-in, has no paper value to compare against).
TABLE_DATASETS = {"table2": "cifar10", "table3": "mvtec", "table4": "coil100", "figure4": "mvtec", "mnist": "mnist"}
SOURCES = {
    "table2": TABLE2_SOURCE,
    "table3": TABLE3_SOURCE,
    "table4": TABLE4_SOURCE,
    "figure4": FIGURE4_SOURCE,
    "mnist": MNIST_LSA_SOURCE,
}


def _frame(rows: dict[str, tuple], columns: tuple[str, ...], mean: tuple | None) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index", columns=list(columns))
    if mean is not None:
        df.loc["mean"] = list(mean)
    df.index.name = "class"
    return df


def table2(with_mean: bool = True) -> pd.DataFrame:
    """Table 2 as printed: index class "0".."9" (+ "mean"), one column per method."""
    return _frame(_TABLE2_ROWS, TABLE2_COLUMNS, TABLE2_MEAN if with_mean else None)


def table3(with_mean: bool = True) -> pd.DataFrame:
    """Table 3 as printed: index MVTec category (+ "mean"), one column per method."""
    return _frame(_TABLE3_ROWS, TABLE3_COLUMNS, TABLE3_MEAN if with_mean else None)


def mnist_lsa(with_mean: bool = True) -> pd.DataFrame:
    """The LSA paper's one-class MNIST table: index digit "0".."9" (+ "mean"), one column per method."""
    return _frame(_MNIST_LSA_ROWS, MNIST_LSA_COLUMNS, MNIST_LSA_MEAN if with_mean else None)


def table4() -> pd.DataFrame:
    """Table 4 as printed: one row per method with its mean AUC over 100 objects and reference."""
    df = pd.DataFrame({"auc": TABLE4_MEAN, "reference": TABLE4_REFERENCES})
    df.index.name = "method"
    return df


def paper_ours_auc(table: str, normal_class: str) -> float | None:
    """The paper's PIADE AUC for one class of a table ("mean" for the mean row), else None.

    ``normal_class`` is the class name as our data package spells it (CIFAR-10 rows are looked
    up by index or by torchvision class name). Table 4 has only a mean; Figure 4 has no values.
    """
    key = row_key(table, normal_class)
    if table == "table2":
        df = table2()
    elif table == "table3":
        df = table3()
    elif table == "table4":
        return TABLE4_MEAN["Ours"] if key == "mean" else None
    elif table in ("figure4", "mnist"):  # no values / the ICPR paper's numbers are not available
        return None
    else:
        raise KeyError(f"unknown table {table!r}; known: {sorted(TABLE_DATASETS)}")
    return float(df.loc[key, "Ours"]) if key in df.index else None


def row_key(table: str, normal_class: str) -> str:
    """The paper's row label for one of our class names: CIFAR-10 rows are numbered 0-9 (our
    names are torchvision's), MVTec rows are the category names; "mean" is the mean row."""
    key = str(normal_class).lower()
    if table == "table2" and key in CIFAR10_CLASS_NAMES:
        return str(CIFAR10_CLASS_NAMES.index(key))
    return key


def paper_baseline_columns(table: str) -> pd.DataFrame:
    """The paper's baseline columns of a table, renamed ``paper_<name>_auc`` (index: class)."""
    if table == "table2":
        df = table2().drop(columns="Ours")
    elif table == "table3":
        df = table3().drop(columns="Ours")
    elif table == "table4":
        df = pd.DataFrame({m: [v] for m, v in TABLE4_MEAN.items() if m != "Ours"}, index=["mean"])
    elif table == "mnist":
        df = mnist_lsa()
    else:
        return pd.DataFrame()
    df.columns = [f"paper_{baseline_slug(c)}_auc" for c in df.columns]
    return df


def baseline_slug(name: str) -> str:
    """ "CNN Feat. Dict." -> "cnn_feat_dict", "AE (SSIM)" -> "ae_ssim"."""
    out = "".join(ch.lower() if ch.isalnum() else "_" for ch in name)
    return "_".join(p for p in out.split("_") if p)
