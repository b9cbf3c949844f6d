//! wsgi-core (being laid down).
