"""The WSGI entry point gunicorn serves: `ticketboss.wsgi:app`."""

from ticketboss import create_app

app = create_app()
