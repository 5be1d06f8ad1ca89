// Package schemadoc extracts the Go doc comments of the configuration structs
// (proxy/config and every plugin under plugins/) and renders them as a Go
// file holding a map, so that the binary can describe every key of the JSON
// Schema (proxy.ConfigSchema) without the source at hand. proxy's go:generate
// line runs it; a test in proxy fails when the committed file is stale.
package schemadoc

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Module is the module path the comment keys start with.
const Module = "github.com/sluice-gw/sluice"

// Dirs lists the package directories read, relative to the module root:
// proxy/config and each directory under plugins/.
func Dirs(root string) ([]string, error) {
	dirs := []string{"proxy/config"}
	entries, err := os.ReadDir(filepath.Join(root, "plugins"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, "plugins/"+e.Name())
		}
	}
	return dirs, nil
}

// Comments returns the doc comments of the config structs found in dirs
// (relative to root), keyed as invopop/jsonschema's CommentMap wants them:
// "PKGPATH.Type" for a type, "PKGPATH.Type.Field" for a field. A config
// struct is one with at least one koanf-tagged field, or one whose schema is
// another type's (JSONSchemaAlias); unexported ones count (a plugin's
// settings often are). A field without a comment of its own
// takes the comment of the field before it when that comment names it
// ("DialTimeout bounds connecting; ReadTimeout and WriteTimeout bound...").
// A type's comment is its first paragraph only.
func Comments(root string, dirs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, dir := range dirs {
		pkg := path.Join(Module, dir)
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		if err != nil {
			return nil, err
		}
		slices.Sort(files)
		fset := token.NewFileSet()
		var parsed []*ast.File
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
			if err != nil {
				return nil, err
			}
			parsed = append(parsed, f)
		}
		aliased := aliasedTypes(parsed)
		for _, f := range parsed {
			collect(f, pkg, aliased, out)
		}
	}
	return out, nil
}

// aliasedTypes lists the types with a JSONSchemaAlias method: their schema
// is another type's (invopop/jsonschema), their description their own.
func aliasedTypes(files []*ast.File) map[string]bool {
	out := map[string]bool{}
	for _, f := range files {
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || fd.Name.Name != "JSONSchemaAlias" || len(fd.Recv.List) != 1 {
				continue
			}
			t := fd.Recv.List[0].Type
			if star, ok := t.(*ast.StarExpr); ok {
				t = star.X
			}
			if id, ok := t.(*ast.Ident); ok {
				out[id.Name] = true
			}
		}
	}
	return out
}

func collect(f *ast.File, pkg string, aliased map[string]bool, out map[string]string) {
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			st, ok := ts.Type.(*ast.StructType)
			if !ok || !(hasKoanfField(st) || aliased[ts.Name.Name]) {
				continue
			}
			doc := ts.Doc
			if doc == nil && len(gd.Specs) == 1 {
				doc = gd.Doc
			}
			key := pkg + "." + ts.Name.Name
			// A type's first paragraph says what it is; the rest is often
			// for the programmer.
			if text, _, _ := strings.Cut(clean(doc.Text()), "\n\n"); text != "" {
				out[key] = text
			}
			prev := ""
			for _, field := range st.Fields.List {
				text := clean(field.Doc.Text())
				if text == "" {
					text = clean(field.Comment.Text())
				}
				for _, n := range field.Names {
					t := text
					if t == "" && mentions(prev, n.Name) {
						t = prev
					}
					if t != "" {
						out[key+"."+n.Name] = t
					}
				}
				if text != "" {
					prev = text
				}
			}
		}
	}
}

func hasKoanfField(st *ast.StructType) bool {
	for _, f := range st.Fields.List {
		if f.Tag == nil {
			continue
		}
		tag, err := strconv.Unquote(f.Tag.Value)
		if err == nil && strings.Contains(tag, `koanf:"`) {
			return true
		}
	}
	return false
}

func mentions(text, name string) bool {
	return text != "" && regexp.MustCompile(`\b`+regexp.QuoteMeta(name)+`\b`).MatchString(text)
}

// clean joins the lines of each paragraph of a comment: editors wrap
// descriptions themselves.
func clean(text string) string {
	var paras []string
	for _, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if p = strings.Join(strings.Fields(p), " "); p != "" {
			paras = append(paras, p)
		}
	}
	return strings.Join(paras, "\n\n")
}

// Source renders comments as the Go file proxy embeds: package proxy, one
// variable, keys sorted.
func Source(comments map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("// Code generated by schema_comments_gen.go; DO NOT EDIT.\n")
	b.WriteString("// Refresh it with: go generate ./proxy\n\n")
	b.WriteString("package proxy\n\n")
	b.WriteString("// configComments holds the doc comments of the config structs, the\n")
	b.WriteString("// descriptions of the JSON Schema's keys (see ConfigSchema).\n")
	b.WriteString("var configComments = map[string]string{\n")
	keys := make([]string, 0, len(comments))
	for k := range comments {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "\t%s: %s,\n", strconv.Quote(k), strconv.Quote(comments[k]))
	}
	b.WriteString("}\n")
	return format.Source(b.Bytes())
}

// Generate reads the comments of the module at root and renders them.
func Generate(root string) ([]byte, error) {
	dirs, err := Dirs(root)
	if err != nil {
		return nil, err
	}
	comments, err := Comments(root, dirs)
	if err != nil {
		return nil, err
	}
	return Source(comments)
}
