"""Optional dependencies, imported where they are used.

``pip install jaxflows`` brings only what the library needs (JAX, flax, optax,
distrax, numpy, tqdm). The command line's ``report.png`` needs matplotlib and
the bundled digits dataset needs scikit-learn; both come with the ``cli`` extra,
``pip install 'jaxflows[cli]'``. :func:`require` imports such a module or raises
an ``ImportError`` that says what needed it and which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> (distribution name on PyPI, extra that brings it)
OPTIONAL = {
    "matplotlib": ("matplotlib", "cli"),
    "sklearn": ("scikit-learn", "cli"),
}


def require(module: str, purpose: str, hint: str = "") -> ModuleType:
    """Import ``module`` (a key of :data:`OPTIONAL` or one of its submodules).

    Raises ``ImportError`` naming ``purpose``, the missing package and the
    extra that brings it (plus ``hint``, e.g. a flag that avoids the need) when
    the package is not installed. A package that is installed but fails to
    import for another reason re-raises its own error unchanged.
    """
    top = module.split(".")[0]
    dist, extra = OPTIONAL[top]
    try:
        importlib.import_module(top)
        return importlib.import_module(module)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if missing is not None and missing.split(".")[0] != top:
            raise
        raise ImportError(f"{purpose} needs {dist}, which is not installed: "
                          f"pip install 'jaxflows[{extra}]'{hint}") from err
