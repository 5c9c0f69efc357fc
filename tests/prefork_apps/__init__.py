"""Small applications that tests/test_prefork_servers.py serves with real pre-fork
servers (gunicorn, uvicorn, celery), each logging through a ``LogHarborHandler``."""
