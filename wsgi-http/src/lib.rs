//! wsgi-http (being laid down).
