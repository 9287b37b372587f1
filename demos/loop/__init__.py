"""The closed loop on one machine: `python -m demos.loop` (docs/loop.md).

Serve v1 of the fraud model with capture on -> traffic whose fraud pattern shifts, labels
arriving late -> live AUC falls and the quality alert's condition holds -> `hotserve retrain`
trains v2 on the captured rows -> `hotserve release` promotes it -> live AUC recovers. Prints the
timeline and plots live AUC and the label-free estimate (docs/img/loop-auc.png).
"""
