#!/usr/bin/env bash
# The official image's envtoconf, for XML and properties files: every environment variable named
# `<FILE>.<EXT>_<key>` (e.g. `HDFS-SITE.XML_dfs.replication=3`) becomes a property of
# <conf dir>/<file>.<ext> (lower-cased name); each such file is written afresh from those variables.
set -euo pipefail
dest=${1:-${HADOOP_CONF_DIR:-/opt/hadoop/etc/hadoop}}
declare -A files=()
while IFS= read -r -d '' entry; do
  name=${entry%%=*}
  value=${entry#*=}
  if [[ $name =~ ^([A-Za-z0-9_-]+)\.(XML|xml|PROPERTIES|properties)_(.+)$ ]]; then
    file="$(echo "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}" | tr '[:upper:]' '[:lower:]')"
    files[$file]+="${BASH_REMATCH[3]}"$'\x1f'"$value"$'\x1e'
  fi
done < <(env -0)
xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' <<<"$1"; }
for file in "${!files[@]}"; do
  out="$dest/$file"
  {
    case "$file" in *.xml) echo '<?xml version="1.0"?>'; echo '<configuration>' ;; esac
    while IFS=$'\x1f' read -r -d $'\x1e' key value; do
      case "$file" in
        *.xml) printf '  <property><name>%s</name><value>%s</value></property>\n' \
                 "$(xml_escape "$key")" "$(xml_escape "$value")" ;;
        *) printf '%s=%s\n' "$key" "$value" ;;
      esac
    done <<<"${files[$file]}"
    case "$file" in *.xml) echo '</configuration>' ;; esac
  } >"$out"
  echo "envtoconf: wrote $out" >&2
done
