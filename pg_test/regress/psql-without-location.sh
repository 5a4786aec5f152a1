#!/bin/sh
# pg_regress launcher (see run.py): runs psql and drops the LOCATION lines of verbose error
# reports, which name a source file and line that change with every edit of the code.
"$@" 2>&1 | sed -e '/^LOCATION:  /d'
