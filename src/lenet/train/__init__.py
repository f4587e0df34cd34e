"""Training: the loop, the run (folder, checkpoints, resume, summary), data-parallel processes, reports, plots.

Imports flow setup <- loop <- checkpoint <- run; report, plots, progress and dist are leaves.
"""
