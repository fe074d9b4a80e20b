"""Tables, figures and the results README, read from run folders (never from a live model).

``results`` reads run folders and plans; ``stats`` holds the bootstrap over seeds and classes; ``tables`` builds
and checks the paper's tables; ``samples`` shows the data; ``figures`` the plots and Figure 3/4; ``readme`` the
results README; ``convergence`` and ``readings`` the notebooks 06 and 07. The notebooks use this package's
names directly (``reporting.section_table``), re-exported here.
"""

from __future__ import annotations

from piade_lib.metrics import bootstrap_aucs, percentile_interval  # noqa: F401
from piade_lib.reporting.figures import (  # noqa: F401
    figure3_runs,
    histories,
    plot_auc_intervals,
    plot_figure3,
    plot_figure4,
    plot_histories,
    plot_roc_curves,
    plot_score_histograms,
    reconstructions,
    save_figure,
    term_auc_frame,
)
from piade_lib.reporting.readme import (  # noqa: F401
    budget_text,
    results_readme,
    write_results_readme,
)
from piade_lib.reporting.results import (  # noqa: F401
    CI_LEVEL,
    MEAN,
    TABLE_COLUMNS,
    MissingRunsError,
    ours_key,
    read_metrics,
    read_scores,
    runs_frame,
    section_plan,
)
from piade_lib.reporting.samples import (  # noqa: F401
    dataset_note,
    distinct_datasets,
    plot_samples,
    split_counts,
)
from piade_lib.reporting.stats import (  # noqa: F401
    mean_auc_ci,
    paired_scores,
)
from piade_lib.reporting.tables import (  # noqa: F401
    FIGURE4_COLUMNS,
    TABLE_FILES,
    TableSchemaError,
    comparison_statement,
    figure4_statement,
    figure4_table,
    paper_comparison,
    paper_reference_table,
    read_table,
    save_frame,
    section_table,
    table_path,
    validate_figure4,
    validate_table,
    write_table,
)
