//! Unwinder tests.
