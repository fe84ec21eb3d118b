"""The torch- and pandas-free tables a spec (and the CLI) is checked against.

Spec validation and ``raybench --help`` must not pay for torch, pandas or Ray, so the names they
check live here, below :mod:`raybench.config`, and each entry names its heavy code by a
``module:function`` reference imported only when the entry runs:

- :mod:`~raybench.catalog.cam_methods`: the CAM methods (``cam.method``);
- :mod:`~raybench.catalog.scenarios`: the registered scenarios and scenario files;
- :mod:`~raybench.catalog.importers`: the dataset layouts ``raybench data import`` reads.

The model table (:mod:`raybench.models.table`) is the fourth such table; it stays beside the
model builders, and the layering test counts it in this layer.
"""
