#!/usr/bin/env bash
# Install what the browser and viewer tests need from npm, when missing: Playwright's driver and
# dcmjs (`npm ci` from the repository's package-lock.json) and the prebuilt OHIF viewer
# (`@ohif/app`'s dist folder, in node_modules/@ohif/app).
#
# Why OHIF is not a dependency in package.json: @ohif/app 3.13.2 declares dependencies on
# @ohif/i18n@3.13.2 and @ohif/ui@3.13.2, which the registry does not have, so npm cannot resolve
# it (ETARGET), and its other dependencies (webpack loaders, React ...) are build tools we do not
# need: the package ships the built viewer in dist/. So the tarball is fetched with `npm pack`,
# checked against the sha512 integrity pinned in package.json ("ohif"), and unpacked into
# node_modules/@ohif/app (removed with node_modules, ignored by git). `npm ci` empties
# node_modules, so it runs first and the viewer is unpacked after it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "npm is missing (scripts/test-services.sh installs it)" >&2; exit 1; }
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/dcmjs ] \
    || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
spec=$(node -p 'require("./package.json").ohif.package')
want=$(node -p 'require("./package.json").ohif.integrity')
version=${spec##*@}
if [ "$(node -p 'try { require("./node_modules/@ohif/app/package.json").version } catch { "" }')" != "$version" ] \
    || [ ! -f node_modules/@ohif/app/dist/index.html ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching $spec (prebuilt viewer, ~50 MB)"
  tarball=$(cd "$tmp" && npm pack --silent "$spec")
  got=$(node -e 'const f = process.argv[1];
    const h = require("crypto").createHash("sha512").update(require("fs").readFileSync(f));
    console.log("sha512-" + h.digest("base64"))' "$tmp/$tarball")
  if [ "$got" != "$want" ]; then
    echo "integrity mismatch for $spec: got $got, package.json pins $want" >&2
    exit 1
  fi
  rm -rf node_modules/@ohif/app
  mkdir -p node_modules/@ohif/app
  tar -xzf "$tmp/$tarball" -C node_modules/@ohif/app --strip-components=1 package/package.json package/dist
fi
