//! Examples (being laid down).
