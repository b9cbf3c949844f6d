//! wsgi-python (being laid down).
