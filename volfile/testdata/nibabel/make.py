"""Writes the NIfTI-1 files in this directory with nibabel (Debian's
python3-nibabel 5.0), and expected.json with the affine nibabel reads back
from each (img.affine: the sform when sform_code > 0, else the qform) and
the marker voxel. Run from this directory: /usr/bin/python3 make.py
"""
import json
import math

import nibabel as nib
import numpy as np

SHAPE = (8, 6, 4)
MARKER = (1, 4, 2)  # the one voxel of value 200; every other voxel is 10


def data():
    d = np.full(SHAPE, 10, dtype=np.uint8)
    d[MARKER] = 200
    return d


def rot_z(deg):
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])


files = {}

# RAS-ordered voxels: x towards the right, y anterior, z superior.
a = np.diag([0.5, 0.75, 1.5, 1.0])
a[:3, 3] = [-2.0, -30.5, 12.25]
files["ras.nii"] = (a, "both")

# LPS-ordered voxels (as DICOM stores them): x towards the left, y posterior.
a = np.diag([-0.5, -0.75, 1.5, 1.0])
a[:3, 3] = [40.0, 25.0, -10.0]
files["lps.nii.gz"] = (a, "both")

# Oblique, qform only, a left-handed voxel grid (qfac = -1): rotated 30
# degrees about z, z flipped.
a = np.eye(4)
a[:3, :3] = rot_z(30) @ np.diag([0.9, 0.9, -2.0])
a[:3, 3] = [-5.5, 7.25, 60.0]
files["oblique_qform.nii"] = (a, "qform")

# Oblique, sform only: rotated -20 degrees about z then 10 about x.
t = math.radians(10)
rx = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
a = np.eye(4)
a[:3, :3] = rx @ rot_z(-20) @ np.diag([1.0, 1.25, 1.5])
a[:3, 3] = [100.0, -50.0, 3.0]
files["oblique_sform.nii"] = (a, "sform")

expected = {}
for name, (affine, which) in files.items():
    img = nib.Nifti1Image(data(), None)
    if which in ("both", "sform"):
        img.set_sform(affine, code=1)
    else:
        img.set_sform(None, code=0)
    if which in ("both", "qform"):
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    nib.save(img, name)
    back = nib.load(name)
    h = back.header
    expected[name] = {
        "affine": [float(v) for v in back.affine.flatten()],
        "sform_code": int(h["sform_code"]),
        "qform_code": int(h["qform_code"]),
        "marker": list(MARKER),
        "shape": list(SHAPE),
    }
with open("expected.json", "w") as f:
    json.dump({"nibabel": nib.__version__, "files": expected}, f, indent=1)
    f.write("\n")
