"""What is done with run folders once they exist: evaluate and predict from a trained run, compare
runs, draw the published report's figures, and train several specs a few at a time (``queue``).
"""
