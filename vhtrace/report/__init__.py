"""``vhtrace report``: a trace as a message-sequence chart (one self-contained HTML file, or
an SVG), and ``vhtrace diff --html``: two traces side by side.

:mod:`model` builds what is drawn from a trace (the analysis, ``show -V``'s fields,
``stats``' features and milestones, ``rings``' view of each snapshot); :mod:`page` and
:mod:`svg` draw it; :mod:`diffpage` draws the alignment ``diff`` computes.
"""
