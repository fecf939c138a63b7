//! The bothy command line: one module per verb.
