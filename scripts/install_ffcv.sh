#!/usr/bin/env bash
# Install FFCV 1.0.2 (and the system libraries it builds against) into an existing Python venv.
#
#   usage: scripts/install_ffcv.sh VENV_DIR
#
# The venv must already hold torch/torchvision (the project's own install puts them there);
# this script does not pin or reinstall them. Needs root (or sudo) for apt-get on Debian/Ubuntu.
#
# Why it looks like this:
# * ffcv ships only an sdist: pip compiles its C extension (_libffcv), which includes
#   <opencv2/opencv.hpp> and <turbojpeg.h> and finds them with `pkg-config opencv4 libturbojpeg`.
# * The extension only links OpenCV core and imgproc (check: ldd .../ffcv/_libffcv*.so), but the
#   Debian package that ships opencv4.pc, libopencv-dev, pulls ~205 packages (Qt, VTK, GDAL,
#   OpenMPI...). We install the 4 packages actually needed and give the build a two-line
#   opencv4.pc plus an opencv.hpp that includes only core and imgproc (in a temp dir).
#   The big install also shares OpenMPI/PMIx with slurm: purging slurm took it away here.
# * The runtime libraries are marked manually installed so `apt-get autoremove` keeps them: that
#   is how an ffcv install broke here (libopencv_imgproc.so.406: cannot open shared object file).
# * cupy is not installed: ffcv imports it only for NormalizeImage on a GPU tensor, which
#   datatransfer.ffcv_data avoids (it normalises with torch on CUDA).
#
# Measured on the project's 2-core Debian 12 / Python 3.11 machine, fresh venv with torch:
#   apt-get part ~12 s (11 packages; 0 s when present), pip part ~60 s (compiling ffcv, numba download).
set -euo pipefail

die() { echo "install_ffcv.sh: error: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 VENV_DIR"
VENV_DIR=$1
PY="$VENV_DIR/bin/python"
[[ -x "$PY" ]] || die "no python at $PY (create the venv first: python3 -m venv $VENV_DIR)"
"$PY" -c "import torch" 2>/dev/null || die "torch is not installed in $VENV_DIR; install torch/torchvision first"

FFCV_VERSION=1.0.2
RUNTIME_PACKAGES=(libopencv-core406 libopencv-imgproc406 libturbojpeg0)
BUILD_PACKAGES=(libopencv-core-dev libopencv-imgproc-dev libturbojpeg0-dev pkg-config g++)

# ---- 1. system libraries (only what is missing) ------------------------------------------------
command -v dpkg-query >/dev/null || die "no dpkg: this script knows Debian/Ubuntu only"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo for apt-get"
    SUDO="sudo"
fi
missing=()
for pkg in "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install_ffcv.sh: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait up to 10 min for another apt/dpkg run to release its lock instead of failing at once.
    APT=($SUDO apt-get -o DPkg::Lock::Timeout=600)
    # A fresh machine may have empty package lists: update first.
    "${APT[@]}" update -qq || die "apt-get update failed"
    "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
$SUDO apt-mark manual "${RUNTIME_PACKAGES[@]}" >/dev/null || die "apt-mark manual failed"
echo "install_ffcv.sh: system libraries ready (${SECONDS}s)"

# ---- 2. build configuration for ffcv's setup.py ------------------------------------------------
libdir=$(dirname "$(dpkg-query -L libopencv-core-dev | grep '/libopencv_core\.so$' | head -n1)")
incdir=/usr/include/opencv4
[[ -f "$libdir/libopencv_imgproc.so" && -f "$incdir/opencv2/imgproc.hpp" ]] \
    || die "OpenCV core/imgproc headers or libraries not found ($incdir, $libdir)"
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/include/opencv2"
printf '#include <opencv2/core.hpp>\n#include <opencv2/imgproc.hpp>\n' > "$stub/include/opencv2/opencv.hpp"
cat > "$stub/opencv4.pc" <<EOF
Name: opencv4
Description: OpenCV core and imgproc, all that ffcv's extension uses
Version: 4
Libs: -L$libdir -lopencv_imgproc -lopencv_core
Cflags: -I$stub/include -I$incdir
EOF
export PKG_CONFIG_PATH="$stub${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
pkg-config --exists opencv4 libturbojpeg || die "pkg-config cannot find opencv4/libturbojpeg"

# ---- 3. python packages ------------------------------------------------------------------------
# ffcv declares its own deps (numba, opencv-python for cv2, fastargs, ...); two are named here as
# the ones that matter. pip caches the wheel it builds, so a rerun does not recompile.
"$PY" -m pip install --quiet "ffcv==$FFCV_VERSION" opencv-python numba \
    || die "pip install ffcv==$FFCV_VERSION failed (see the compiler output above)"

# ---- 4. smoke test -----------------------------------------------------------------------------
"$PY" - <<'EOF' || die "ffcv installed but does not import (missing shared library? see above)"
import importlib.util
import ffcv.loader, ffcv.writer, ffcv.transforms  # noqa: F401
from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder  # noqa: F401
from importlib.metadata import version
print("install_ffcv.sh: ffcv", version("ffcv"), "imports;",
      "cupy present" if importlib.util.find_spec("cupy") else "no cupy (not needed on CPU)")
EOF
echo "install_ffcv.sh: done (${SECONDS}s)"
