package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sluice-gw/sluice/proxy/config"
)

// Why a watched file matters: the reason logged with the reload it causes.
const (
	reasonConfigFile = "config file changed"
	reasonSecretFile = "secret file changed"
)

// maxDebounceWaits caps how long a stream of changes that never pauses
// delays its reload: at most this many debounce periods after its first event.
const maxDebounceWaits = 10

// watchReload is the config watcher asking Run for a reload: why, and the
// file whose content changed.
type watchReload struct {
	reason string
	path   string
}

// reloadNotice wakes the config watcher after every reload, by SIGHUP, POST
// /admin/reload, the watcher itself or Apply. An applied config may switch
// watching on or off, change the debounce or name other secret files; a
// rejected one may name a secret file that is not there yet. Its zero value
// is ready to use.
type reloadNotice struct {
	once sync.Once
	ch   chan struct{}
}

func (n *reloadNotice) c() chan struct{} {
	n.once.Do(func() { n.ch = make(chan struct{}, 1) })
	return n.ch
}

func (n *reloadNotice) notify() {
	select {
	case n.c() <- struct{}{}:
	default: // one pending notice is enough: the watcher reads the config then
	}
}

// fileSum is what a watched path holds: a hash of the content of the file
// it resolves to (symlinks followed, as a Kubernetes volume's ..data link).
// ok is false when the path does not resolve to a readable, non-empty
// regular file.
type fileSum struct {
	sum [sha256.Size]byte
	ok  bool
}

func sumFile(path string) fileSum {
	f, err := os.Open(path) // follows symlinks
	if err != nil {
		return fileSum{}
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		// A directory or a pipe (reading one could block), or an empty file:
		// one a writer has truncated and not written yet, most likely (an
		// empty config file is valid, and would serve no routes).
		return fileSum{}
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fileSum{}
	}
	var fs fileSum
	h.Sum(fs.sum[:0])
	fs.ok = true
	return fs
}

// configWatcher reloads the gateway when the config file or one of the
// "file:" secrets of the serving config (or of the config the last reload
// rejected) changes on disk (reload.watch). It
// watches the directories that hold them, and the files they resolve to:
// a Kubernetes ConfigMap or Secret volume changes by swapping its ..data
// symlink (the file's own inode never changes: the event is on the
// directory), an editor saves by renaming a new file over the old one, and
// in-place writes through a single-file bind mount are seen on the file
// only. Any event re-arms the debounce timer; when it fires, every watched
// path is resolved and hashed again, and if one holds new content, Run is
// asked for one reload, exactly like SIGHUP. A path that is missing or
// empty causes no reload (the running config keeps serving); it is picked up
// when it comes back.
//
// One goroutine runs it (run), from Run's start to its end: it never
// touches the request path. A watcher that cannot work (inotify limits) is
// logged once; SIGHUP and POST /admin/reload still work.
type configWatcher struct {
	g    *Gateway
	file string             // the config file, absolute; "" when there is none
	out  chan<- watchReload // to Run's loop, which reloads

	fs       *fsnotify.Watcher // nil while watching is off (or failed to start)
	debounce time.Duration
	paths    map[string]string  // watched path -> reason
	order    []string           // paths, the config file first
	base     map[string]fileSum // what each path holds, as last loaded or read
	warned   map[string]bool    // problems logged, not to be repeated while they last
	timer    *time.Timer
	timerC   <-chan time.Time // nil when no check is pending
	first    time.Time        // first event since the last check
	cfg      *config.Config   // the serving config the files were last taken from
}

func newConfigWatcher(g *Gateway, configPath string, out chan<- watchReload) *configWatcher {
	w := &configWatcher{g: g, out: out, base: map[string]fileSum{}, warned: map[string]bool{}}
	if configPath != "" {
		if abs, err := filepath.Abs(configPath); err == nil {
			w.file = abs
		}
	}
	return w
}

// run serves the watcher until ctx is done.
func (w *configWatcher) run(ctx context.Context) {
	defer w.closeFS()
	w.sync()
	for {
		var events <-chan fsnotify.Event
		var errs <-chan error
		if w.fs != nil {
			events, errs = w.fs.Events, w.fs.Errors
		}
		select {
		case <-ctx.Done():
			return
		case <-w.g.reloaded.c():
			w.sync()
		case _, open := <-events:
			if !open {
				w.closeFS()
				continue
			}
			w.arm()
		case err, open := <-errs:
			if !open {
				w.closeFS()
				continue
			}
			w.warnOnce("error:"+err.Error(), "watching the config files", "error", err.Error())
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.arm() // events were lost: look at every file
			}
		case <-w.timerC:
			w.timerC, w.first = nil, time.Time{}
			w.check()
		}
	}
}

// sync makes the watcher follow the serving config: reload.watch on or
// off, its debounce, and the set of files (the config file and the
// config's secret files).
func (w *configWatcher) sync() {
	cfg := w.g.Config()
	if !cfg.Reload.Watch || w.file == "" {
		if cfg.Reload.Watch {
			w.warnOnce("nofile", "reload.watch is on, but the gateway has no config file to reload from")
		}
		if w.fs != nil {
			w.closeFS()
			w.g.Logger().Info("stopped watching the config files (reload.watch is off)")
		}
		return
	}
	w.debounce = cfg.Reload.Debounce.D()
	started := false
	if w.fs == nil {
		fs, err := fsnotify.NewWatcher()
		if err != nil {
			w.warnOnce("start", "cannot watch the config files; reload with SIGHUP or POST /admin/reload", "error", err.Error())
			return
		}
		delete(w.warned, "start")
		w.fs, started = fs, true
	}

	// The files: the config file, the serving config's secret files and
	// those of the config the last reload rejected, if it got that far: a
	// rejected config may name a secret file that is not there yet (a
	// Kubernetes ConfigMap updated before the Secret it goes with).
	rejected := w.g.rejected.Load()
	w.paths = map[string]string{w.file: reasonConfigFile}
	w.order = []string{w.file}
	for _, c := range []*config.Config{cfg, rejected} {
		if c == nil {
			continue
		}
		for _, p := range c.SecretFiles() {
			if _, dup := w.paths[p]; !dup {
				w.paths[p] = reasonSecretFile
				w.order = append(w.order, p)
			}
		}
	}
	for p := range w.base {
		if _, kept := w.paths[p]; !kept {
			delete(w.base, p)
			delete(w.warned, "gone:"+p)
		}
	}
	w.addWatches()

	// What each file held: as the loader of the config just applied read
	// them, or after a rejected reload, as that reload read them (taking the
	// serving config's content then would retry the rejected one forever).
	// Then every file is read once more (w.arm below): a change made between
	// that load and these watches, which no event reports, is caught too.
	// A file no load read (a config that could not be parsed, one given to
	// Apply) is as the watcher last read it, or as it is now.
	from := rejected
	if cfg != w.cfg {
		from, w.cfg = cfg, cfg
	}
	for _, p := range w.order {
		if from != nil {
			if sum, ok := from.FileSum(p); ok {
				w.base[p] = fileSum{sum: sum, ok: true}
				continue
			}
		}
		if _, known := w.base[p]; !known {
			w.base[p] = sumFile(p)
		}
	}
	w.arm()
	if started {
		w.g.Logger().Info("watching the config files for changes", "files", w.order, "debounce", w.debounce.String())
	}
}

// addWatches watches, for every path, its directory (or, while that is
// missing, the nearest directory above it that exists), the directory of
// the file it resolves to, and that file; and stops watching what no path
// needs any more. A path through a swapped symlink resolves somewhere else
// after each swap, so this runs again at every check.
func (w *configWatcher) addWatches() {
	want := map[string]bool{}
	for _, p := range w.order {
		if d, ok := existingDir(filepath.Dir(p)); ok {
			want[d] = true
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			want[filepath.Dir(r)] = true
			want[r] = true
		}
	}
	have := map[string]bool{}
	for _, p := range w.fs.WatchList() {
		if !want[p] {
			_ = w.fs.Remove(p)
			continue
		}
		have[p] = true
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if have[p] {
			continue
		}
		if err := w.fs.Add(p); err != nil {
			if !errors.Is(err, os.ErrNotExist) { // gone since: seen at the next check
				w.warnOnce("add:"+p, "cannot watch a config path; reload with SIGHUP after changing it", "path", p, "error", err.Error())
			}
			continue
		}
		delete(w.warned, "add:"+p)
	}
}

// existingDir returns dir with symlinks resolved, or the nearest directory
// above it that exists.
func existingDir(dir string) (string, bool) {
	for {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			if fi, err := os.Stat(r); err == nil && fi.IsDir() {
				return r, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// arm (re)starts the debounce timer: the check runs once the files have
// been quiet for the debounce, or maxDebounceWaits debounces after the first
// event of a stream that never pauses.
func (w *configWatcher) arm() {
	now := time.Now()
	if w.first.IsZero() {
		w.first = now
	}
	wait := min(w.debounce, w.first.Add(maxDebounceWaits*w.debounce).Sub(now))
	if w.timer == nil {
		w.timer = time.NewTimer(wait)
	} else {
		w.timer.Reset(wait)
	}
	w.timerC = w.timer.C
}

// check reads every watched path again and asks for a reload if one holds
// new content.
func (w *configWatcher) check() {
	w.addWatches() // follow swapped symlinks and recreated directories
	var changed *watchReload
	for _, p := range w.order {
		cur := sumFile(p)
		if !cur.ok {
			w.warnOnce("gone:"+p, "a watched file is missing, empty or unreadable; the running config keeps serving", "path", p)
			continue
		}
		if w.warned["gone:"+p] {
			delete(w.warned, "gone:"+p)
			w.g.Logger().Info("a watched file is back", "path", p)
		}
		base := w.base[p]
		w.base[p] = cur
		if changed == nil && (!base.ok || cur.sum != base.sum) {
			changed = &watchReload{reason: w.paths[p], path: p}
		}
	}
	if changed == nil {
		return
	}
	select {
	case w.out <- *changed:
	default: // a reload is pending already: it reads the files as they are now
	}
}

// closeFS stops watching and forgets the files.
func (w *configWatcher) closeFS() {
	if w.fs != nil {
		_ = w.fs.Close()
		w.fs = nil
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.timerC, w.first = nil, time.Time{}
	w.paths, w.order, w.cfg = nil, nil, nil
	clear(w.base)
}

// warnOnce logs a problem once while it lasts (until its key is deleted
// from w.warned).
func (w *configWatcher) warnOnce(key, msg string, args ...any) {
	if w.warned[key] {
		return
	}
	w.warned[key] = true
	w.g.Logger().Warn(msg, args...)
}
