// Package django holds the tests of the Django example and of the
// snorky-django helpers (snorky_django/): they start Debian's Python with
// Django and Django REST Framework against a throwaway PostgreSQL and a real
// `snorky serve`. The example itself is Python; see README.md.
package django
