"""Serves docs/security.md's Django recipe with Django's test client, in a process of its own
(Django's settings are global to a process): ``python -m tests.django_recipe FOLDER PATH...``.

FOLDER holds the recipe as ``views.py``, which is also the URL conf, as the recipe says.
The settings are the least a project has for ``login_required`` (auth, sessions, a database
in memory); the secret comes from ``WSHUB_JWT_SECRET``. alice is a member of the group
``room-42``; each PATH is fetched as alice, or (prefixed with ``anonymous:``) logged out, and
the answers are printed as a JSON list of ``[status, body]``.
"""

from __future__ import annotations

import json
import os
import sys

import django
from django.conf import settings


def main() -> None:
    folder, paths = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, folder)
    settings.configure(
        SECRET_KEY="django-session-key-for-the-recipe-test",
        WSHUB_JWT_SECRET=os.environ["WSHUB_JWT_SECRET"],
        ROOT_URLCONF="views",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        ALLOWED_HOSTS=["testserver"],
    )
    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    alice = User.objects.create_user("alice")
    alice.groups.add(Group.objects.create(name="room-42"))
    logged_in, anonymous = Client(), Client()
    logged_in.force_login(alice)
    answers = []
    for path in paths:
        client = logged_in
        if path.startswith("anonymous:"):
            client, path = anonymous, path.removeprefix("anonymous:")
        response = client.get(path)
        answers.append([response.status_code, response.content.decode()])
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
