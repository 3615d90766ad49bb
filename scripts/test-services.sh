#!/usr/bin/env bash
# Install (when missing) and start what the test suite talks to: dcmtk, dicom3tools, Orthanc
# (with its DICOMweb plugin), redis-server, PostgreSQL, and for the browser tests Debian's
# chromium, Node.js and npm with the npm packages of the console and OHIF viewer tests
# (playwright-core, dcmjs, the prebuilt viewer: scripts/install-npm.sh). Safe to run again; starts nothing that already runs.
set -euo pipefail
need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
# PixelMed's DicomSRValidator (tests/harness/validators.py runs it with java from the jar).
[ -f /usr/share/java/pixelmed.jar ] && command -v java >/dev/null || need+=(pixelmed-apps)
command -v Orthanc >/dev/null || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# npm packages of the browser and viewer tests (npm ci when missing or stale; OHIF's dist once).
"$(dirname "${BASH_SOURCE[0]}")/install-npm.sh"
# The shared Redis on 127.0.0.1:6379 (tests that kill Redis start their own on a free port).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /tmp/deepcovid-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/deepcovid-redis --logfile /tmp/deepcovid-redis/redis.log
fi
# PostgreSQL on 127.0.0.1:5432 with a database the tests may use.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$ver" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  export DEEPCOVID_TEST_PG_URL=${DEEPCOVID_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
fi
