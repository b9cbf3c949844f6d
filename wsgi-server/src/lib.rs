//! wsgi-server (being laid down).
