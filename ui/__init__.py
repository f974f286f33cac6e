"""What only the page needs: the tabs' handlers and state, their tables, overlays and editor values.

``app.py`` builds the Blocks and wires these handlers; :mod:`model` does the work and returns
numbers, arrays and dataclasses, and never imports this package. Research demo, not for diagnostic use.
"""
