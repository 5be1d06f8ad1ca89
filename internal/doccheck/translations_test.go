package doccheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// guides lists each English document and where its Korean translation lives:
// README.md beside README.ko.md, docs/X.md beside docs/ko/X.md,
// deploy/README.md beside deploy/README.ko.md.
func guides(t *testing.T) map[string]string {
	t.Helper()
	pairs := map[string]string{
		"README.md":        "README.ko.md",
		"deploy/README.md": "deploy/README.ko.md",
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		name := filepath.Base(d)
		pairs["docs/"+name] = "docs/ko/" + name
	}
	return pairs
}

func readSections(t *testing.T, rel string) []Section {
	t.Helper()
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Sections(f)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return s
}

// TestTranslationsInStep fails when a section exists in one language and not
// the other, naming the file, the line and the section.
func TestTranslationsInStep(t *testing.T) {
	pairs := guides(t)
	names := make([]string, 0, len(pairs))
	for en := range pairs {
		names = append(names, en)
	}
	slices.Sort(names)
	for _, en := range names {
		ko := pairs[en]
		if _, err := os.Stat(filepath.Join(root, ko)); err != nil {
			t.Errorf("%s has no Korean counterpart: write %s", en, ko)
			continue
		}
		for _, p := range Compare(en, readSections(t, en), ko, readSections(t, ko)) {
			t.Error(p)
		}
	}
	// A Korean document without its English original is out of step too.
	kos, _ := filepath.Glob(filepath.Join(root, "docs", "ko", "*.md"))
	for _, ko := range kos {
		en := "docs/" + filepath.Base(ko)
		if _, ok := pairs[en]; !ok {
			t.Errorf("docs/ko/%s has no English original %s", filepath.Base(ko), en)
		}
	}
}

func TestSlugMatchesGitHub(t *testing.T) {
	for title, want := range map[string]string{
		"Set up on a fresh machine":  "set-up-on-a-fresh-machine",
		"Secrets: env and file":      "secrets-env-and-file",
		"`rate_limit`":               "rate_limit",
		"[Plugins](docs/plugins.md)": "plugins",
		"POST /admin/reload":         "post-adminreload",
		"Cache-Status and Age (RFC)": "cache-status-and-age-rfc",
		"설치":                         "설치",
	} {
		if got := Slug(title); got != want {
			t.Errorf("Slug(%q) = %q, want %q", title, got, want)
		}
	}
}

func TestCompareNamesWhatIsMissing(t *testing.T) {
	en := mustSections(t, "# Sluice\n## Install\n```\n## not a heading\n```\n## Run\n### Flags\n")
	ko := mustSections(t, "# Sluice <a id=\"sluice\"></a>\n## 설치 <a id=\"install\"></a>\n## 실행 <a id=\"run\"></a>\n")
	got := strings.Join(Compare("README.md", en, "README.ko.md", ko), "\n")
	if !strings.Contains(got, `README.md:7: section "Flags" (#flags) has no counterpart in README.ko.md`) {
		t.Errorf("a section missing in Korean was not named:\n%s", got)
	}
	ko = mustSections(t, "# Sluice <a id=\"sluice\"></a>\n## 설치 <a id=\"install\"></a>\n## 실행 <a id=\"run\"></a>\n### 플래그 <a id=\"flags\"></a>\n## 부록\n## 기타 <a id=\"extra\"></a>\n")
	got = strings.Join(Compare("README.md", en, "README.ko.md", ko), "\n")
	for _, want := range []string{
		`README.ko.md:5: heading "부록" does not say which section`,
		`README.ko.md:6: section "기타" (#extra) has no counterpart in README.md`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	ko = mustSections(t, "# Sluice <a id=\"sluice\"></a>\n## 실행 <a id=\"run\"></a>\n## 설치 <a id=\"install\"></a>\n### 플래그 <a id=\"flags\"></a>\n")
	if got := Compare("README.md", en, "README.ko.md", ko); len(got) != 1 || !strings.Contains(got[0], "same order") {
		t.Errorf("swapped sections: %q", got)
	}
	ko = mustSections(t, "# Sluice <a id=\"sluice\"></a>\n## 설치 <a id=\"install\"></a>\n## 실행 <a id=\"run\"></a>\n## 플래그 <a id=\"flags\"></a>\n")
	if got := Compare("README.md", en, "README.ko.md", ko); len(got) != 1 || !strings.Contains(got[0], "level-2 heading, level 3") {
		t.Errorf("wrong level: %q", got)
	}
	ko = mustSections(t, "# Sluice <a id=\"sluice\"></a>\n## 설치 <a id=\"install\"></a>\n## 실행 <a id=\"run\"></a>\n### 플래그 <a id=\"flags\"></a>\n")
	if got := Compare("README.md", en, "README.ko.md", ko); len(got) != 0 {
		t.Errorf("a faithful translation reported: %q", got)
	}
}

func mustSections(t *testing.T, doc string) []Section {
	t.Helper()
	s, err := Sections(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
