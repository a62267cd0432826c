"""Sphinx configuration: numpydoc, the API reference from the docstrings of the
installed fastoptim, the default theme, nothing from the network (no intersphinx).
tools/check_docs.sh builds it with every warning an error:

    python -m sphinx -E -W --keep-going -n -b html docs docs/_build/html
"""
import fastoptim

project = "fastoptim"
author = "the fastoptim developers"
copyright = "the fastoptim developers"
version = release = fastoptim.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
]

root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"fastoptim {release}"

autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

nitpicky = True
# no intersphinx: the standard library's classes in annotations have no target
nitpick_ignore = [("py:class", "contextlib.AbstractContextManager")]
