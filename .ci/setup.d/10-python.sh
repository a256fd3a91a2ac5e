# Python dependencies of the kit and of its tests.
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
