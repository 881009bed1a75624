#!/usr/bin/env bash
# Entrypoint, as the official image's starter.sh: configuration from the environment, a NameNode
# formatted only when ENSURE_NAMENODE_DIR does not exist yet (so a restart on the same volume keeps
# the file system), then the command.
set -euo pipefail
/opt/hadoop/bin/envtoconf.sh "${HADOOP_CONF_DIR:-/opt/hadoop/etc/hadoop}"
if [ -n "${ENSURE_NAMENODE_DIR:-}" ] && [ ! -d "$ENSURE_NAMENODE_DIR" ]; then
  echo "starter: $ENSURE_NAMENODE_DIR does not exist: formatting the NameNode" >&2
  clusterid=()
  [ -n "${ENSURE_NAMENODE_CLUSTERID:-}" ] && clusterid=(-clusterid "$ENSURE_NAMENODE_CLUSTERID")
  /opt/hadoop/bin/hdfs namenode -format -force -nonInteractive "${clusterid[@]}"
fi
exec "$@"
