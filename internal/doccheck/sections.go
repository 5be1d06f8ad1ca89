package doccheck

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"
)

// A Section is one Markdown heading.
type Section struct {
	Line  int
	Level int
	Title string // the heading text, anchor tag removed
	ID    string // the explicit <a id>, else the GitHub slug of Title
	// Explicit says the ID came from an <a id="..."> in the heading.
	Explicit bool
}

var (
	headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	anchorRE  = regexp.MustCompile(`<a\s+id="([^"]+)"\s*>\s*</a>`)
	fenceRE   = regexp.MustCompile("^\\s*(```|~~~)")
)

// Sections lists the headings of a Markdown document, skipping fenced code.
// Repeated slugs get GitHub's -1, -2... suffixes.
func Sections(r io.Reader) ([]Section, error) {
	var out []Section
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	inFence, fence := false, ""
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			switch {
			case !inFence:
				inFence, fence = true, m[1]
			case m[1] == fence:
				inFence = false
			}
			continue
		}
		if inFence {
			continue
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := Section{Line: n, Level: len(m[1]), Title: m[2]}
		if a := anchorRE.FindStringSubmatch(s.Title); a != nil {
			s.ID, s.Explicit = a[1], true
			s.Title = strings.TrimSpace(anchorRE.ReplaceAllString(s.Title, ""))
		} else {
			s.ID = Slug(s.Title)
			if k := seen[s.ID]; k > 0 {
				seen[s.ID] = k + 1
				s.ID = fmt.Sprintf("%s-%d", s.ID, k)
			} else {
				seen[s.ID] = 1
			}
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

var linkRE = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// Slug is the anchor GitHub gives a heading: link targets and markup
// dropped, lower case, letters, digits, '-' and '_' kept, spaces to '-'.
func Slug(title string) string {
	title = linkRE.ReplaceAllString(title, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// Compare lists every way the translation's sections differ from the
// original's: a section missing on either side, a heading without the anchor
// of its original, a level or an order that differs.
func Compare(origName string, orig []Section, transName string, trans []Section) []string {
	var problems []string
	inTrans := map[string]Section{}
	for _, s := range trans {
		if !s.Explicit {
			problems = append(problems, fmt.Sprintf("%s:%d: heading %q does not say which section of %s it translates: end it with <a id=\"SECTION\"></a>",
				transName, s.Line, s.Title, origName))
			continue
		}
		inTrans[s.ID] = s
	}
	inOrig := map[string]Section{}
	for _, s := range orig {
		inOrig[s.ID] = s
		if _, ok := inTrans[s.ID]; !ok {
			problems = append(problems, fmt.Sprintf("%s:%d: section %q (#%s) has no counterpart in %s: add a heading ending in <a id=%q></a>",
				origName, s.Line, s.Title, s.ID, transName, s.ID))
		}
	}
	for _, s := range trans {
		if s.Explicit {
			if _, ok := inOrig[s.ID]; !ok {
				problems = append(problems, fmt.Sprintf("%s:%d: section %q (#%s) has no counterpart in %s",
					transName, s.Line, s.Title, s.ID, origName))
			}
		}
	}
	if len(problems) > 0 {
		return problems
	}
	// Same set: now the same order and levels.
	for i := range orig {
		o, t := orig[i], trans[i]
		if o.ID != t.ID {
			return append(problems, fmt.Sprintf("%s:%d: section #%s comes where %s:%d has #%s: keep the sections in the same order",
				transName, t.Line, t.ID, origName, o.Line, o.ID))
		}
		if o.Level != t.Level {
			problems = append(problems, fmt.Sprintf("%s:%d: section #%s is a level-%d heading, level %d in %s:%d",
				transName, t.Line, t.ID, t.Level, o.Level, origName, o.Line))
		}
	}
	return problems
}
