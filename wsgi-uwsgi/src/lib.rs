//! wsgi-uwsgi (being laid down).
