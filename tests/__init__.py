"""raybench's tests, a package so that test modules of the same name in different folders
(``tests/<package>/test_<module>.py`` mirrors ``raybench/<package>/<module>.py``) do not clash,
and the helpers import as ``tests.helpers.<name>`` from the repository root."""
