"""A minimal Django project served by wsgi-server in the end-to-end tests."""
