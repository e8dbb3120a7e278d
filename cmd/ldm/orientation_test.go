package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLI_import_orientation imports a raw file with --orientation,
// --origin and --space and a NIfTI file written by nibabel, and checks that
// `ldm volume get` prints each transform and space; placing flags on a file
// with a header, and bad codes, are usage errors.
func TestCLI_import_orientation(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	file := filepath.Join(t.TempDir(), "vol.raw")
	if err := os.WriteFile(file, make([]byte, 4*3*2), 0o644); err != nil {
		t.Fatal(err)
	}
	get := func(name string) (tr []float64, space string) {
		t.Helper()
		out, errOut, err := ldmCmd(t, "", "volume", "get", name, "--server", base)
		if err != nil {
			t.Fatalf("volume get: %v\n%s", err, errOut)
		}
		var v struct {
			Transform []float64 `json:"transform"`
			Space     string    `json:"space"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("volume get printed %q: %v", out, err)
		}
		return v.Transform, v.Space
	}
	equal := func(a, b []float64) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}

	if out, errOut, err := ldmCmd(t, "", "import", file, "--name", "lpi", "--shape", "4x3x2", "--spacing", "0.5,1,2",
		"--orientation", "LPI", "--origin", "10,-20.5,30", "--space", "LPS", "-q", "--server", base); err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, errOut)
	}
	tr, space := get("lpi")
	if want := []float64{0.5, 0, 0, 10, 0, 1, 0, -20.5, 0, 0, -2, 30, 0, 0, 0, 1}; !equal(tr, want) || space != "SPACE_LPS" {
		t.Fatalf("transform %v space %s, want %v SPACE_LPS", tr, space, want)
	}
	// The default space for an orientation is RAS.
	if _, errOut, err := ldmCmd(t, "", "import", file, "--name", "lps-in-ras", "--shape", "4x3x2", "--orientation", "LPS", "-q", "--server", base); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	if tr, space := get("lps-in-ras"); !equal(tr, []float64{-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}) || space != "SPACE_RAS" {
		t.Fatalf("transform %v space %s", tr, space)
	}
	// Without them: diag(spacing), no space.
	if _, errOut, err := ldmCmd(t, "", "import", file, "--name", "plain", "--shape", "4x3x2", "--spacing", "2,3,4", "-q", "--server", base); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	if tr, space := get("plain"); !equal(tr, []float64{2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1}) || space != "" {
		t.Fatalf("transform %v space %q", tr, space)
	}

	// volume create takes the same flags.
	if _, errOut, err := ldmCmd(t, "", "volume", "create", "pir", "--shape", "4x4x4", "--spacing", "1,2,3", "--orientation", "PIR", "--origin", "5,6,7", "--server", base); err != nil {
		t.Fatalf("volume create: %v\n%s", err, errOut)
	}
	if tr, space := get("pir"); !equal(tr, []float64{0, 0, 3, 5, -1, 0, 0, 6, 0, -2, 0, 7, 0, 0, 0, 1}) || space != "SPACE_RAS" {
		t.Fatalf("pir: transform %v space %s", tr, space)
	}

	nii := "../../volfile/testdata/nibabel/oblique_sform.nii"
	if _, errOut, err := ldmCmd(t, "", "import", nii, "--name", "oblique", "-q", "--server", base); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	raw, err := os.ReadFile("../../volfile/testdata/nibabel/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Files map[string]struct {
			Affine []float64 `json:"affine"`
		} `json:"files"`
	}
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	if tr, space := get("oblique"); !equal(tr, exp.Files["oblique_sform.nii"].Affine) || space != "SPACE_RAS" {
		t.Fatalf("transform %v space %s, want nibabel's %v", tr, space, exp.Files["oblique_sform.nii"].Affine)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"import", nii, "--name", "x", "--orientation", "LPS"}, "--orientation"},
		{[]string{"import", file, "--name", "x", "--shape", "4x3x2", "--orientation", "LPX"}, "three letters"},
		{[]string{"import", file, "--name", "x", "--shape", "4x3x2", "--origin", "1,2"}, "--origin"},
		{[]string{"import", file, "--name", "x", "--shape", "4x3x2", "--space", "LPS"}, "--orientation"},
		{[]string{"import", file, "--name", "x", "--shape", "4x3x2", "--orientation", "RAS", "--space", "XYZ"}, "--space"},
	} {
		_, _, err := ldmCmd(t, "", append(tc.args, "--server", base)...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("ldm %s: %v (exit %d), want a usage error naming %s", strings.Join(tc.args, " "), err, exitCode(err), tc.want)
		}
	}
}
