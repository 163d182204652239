"""The mathematics, knowing no model: distributions and warping, the transport problem (LP and α*),
the token-level selection rules (K-SEQ and the others) and their exact laws by enumeration."""
