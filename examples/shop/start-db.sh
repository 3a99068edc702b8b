#!/bin/sh
# Stands in for a database server: says it is ready, then serves until stopped.
echo "starting the database"
sleep 1
echo "database system is ready to accept connections"
exec sleep 86400
