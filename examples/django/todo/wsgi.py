import os
import sys

from django.core.wsgi import get_wsgi_application

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "snorky_django", "src"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "todo.settings")
application = get_wsgi_application()
