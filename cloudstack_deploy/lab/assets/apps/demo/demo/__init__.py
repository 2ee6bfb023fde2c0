"""The csdeploy demo application: a web app (demo.app) and a worker (demo.worker).

Both run from one image; which one runs is the container's command. The code is kept
deliberately small and stdlib-first (plus Debian's python3-psycopg2 and python3-redis), so
the lab can build the image offline from Debian packages.
"""
