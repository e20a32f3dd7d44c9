"""The InSPO paper's didactic games (XOR, M-NE, Bridge): the algorithm's correctness tests."""
