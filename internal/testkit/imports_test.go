package testkit_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyTestsImportTheKit fails when a production (non-test) file of any
// package of the module imports the test kit: it lists each package's
// imports as `go list` sees them without tests.
func TestOnlyTestsImportTheKit(t *testing.T) {
	const kit = "github.com/sluice-gw/sluice/internal/testkit"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`,
		"github.com/sluice-gw/sluice/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list named %d packages; want the whole module:\n%s", len(lines), out)
	}
	for _, line := range lines {
		pkg, imports, _ := strings.Cut(line, " ")
		if pkg == kit {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if imp == kit {
				t.Errorf("%s imports the test kit from production code", pkg)
			}
		}
	}
}
