package alerting

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Alert is one alert as the dispatcher holds it.
type Alert struct {
	Labels       labels.Labels
	Annotations  labels.Labels
	StartsAt     time.Time
	EndsAt       time.Time
	GeneratorURL string
}

// Resolved reports whether the alert has ended at now.
func (a *Alert) Resolved(now time.Time) bool { return !a.EndsAt.IsZero() && !a.EndsAt.After(now) }

func (a *Alert) fingerprint() uint64 { return a.Labels.Hash() }

// route is a compiled objects.AlertRoute, with what it inherits filled in.
type route struct {
	id             string
	receiver       string
	matchers       []*labels.Matcher
	groupBy        []string
	groupByAll     bool
	groupWait      time.Duration
	groupInterval  time.Duration
	repeatInterval time.Duration
	cont           bool
	routes         []*route
}

func compileRoute(r *objects.AlertRoute, parent *route, id string) (*route, error) {
	c := &route{id: id, receiver: r.Receiver, cont: r.Continue}
	if parent != nil {
		*c = route{id: id, receiver: parent.receiver, groupBy: parent.groupBy, groupByAll: parent.groupByAll,
			groupWait: parent.groupWait, groupInterval: parent.groupInterval, repeatInterval: parent.repeatInterval, cont: r.Continue}
		if r.Receiver != "" {
			c.receiver = r.Receiver
		}
	} else {
		c.groupWait, c.groupInterval, c.repeatInterval = objects.DefaultGroupWait.Std(), objects.DefaultGroupInterval.Std(), objects.DefaultRepeatInterval.Std()
	}
	for _, s := range r.Matchers {
		m, err := objects.ParseMatcher(s)
		if err != nil {
			return nil, err
		}
		c.matchers = append(c.matchers, m)
	}
	if len(r.GroupBy) > 0 {
		c.groupBy, c.groupByAll = nil, false
		for _, l := range r.GroupBy {
			if l == "..." {
				c.groupByAll = true
				continue
			}
			c.groupBy = append(c.groupBy, l)
		}
		slices.Sort(c.groupBy)
	}
	if d := r.GroupWait.Std(); d > 0 {
		c.groupWait = d
	}
	if d := r.GroupInterval.Std(); d > 0 {
		c.groupInterval = d
	}
	if d := r.RepeatInterval.Std(); d > 0 {
		c.repeatInterval = d
	}
	for i := range r.Routes {
		child, err := compileRoute(&r.Routes[i], c, id+"/"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		c.routes = append(c.routes, child)
	}
	return c, nil
}

func (r *route) matches(ls labels.Labels) bool {
	for _, m := range r.matchers {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// match returns the routes an alert goes to: the deepest matching
// routes, depth first, stopping at the first match unless it continues.
func (r *route) match(ls labels.Labels) []*route {
	if !r.matches(ls) {
		return nil
	}
	var out []*route
	for _, c := range r.routes {
		m := c.match(ls)
		out = append(out, m...)
		if len(m) > 0 && !c.cont {
			break
		}
	}
	if len(out) == 0 {
		out = []*route{r}
	}
	return out
}

func (r *route) groupLabels(ls labels.Labels) labels.Labels {
	if r.groupByAll {
		return ls
	}
	b := labels.NewScratchBuilder(len(r.groupBy))
	for _, n := range r.groupBy {
		if v := ls.Get(n); v != "" {
			b.Add(n, v)
		}
	}
	b.Sort()
	return b.Labels()
}

// policy is a compiled NotificationPolicy.
type policy struct {
	key       string // namespace/name
	root      *route
	receivers map[string]*receiver
}

// group is an aggregation group: the alerts of one route with the same
// group labels.
type group struct {
	key      string
	policy   *policy
	route    *route
	labels   labels.Labels
	alerts   map[uint64]*Alert
	next     time.Time // next flush
	lastSent time.Time
	lastKey  string // what the last notification held
	sentAny  bool
}

// Notification is what a receiver gets for one group flush.
type Notification struct {
	Receiver          string
	Policy            string
	GroupKey          string
	GroupLabels       labels.Labels
	CommonLabels      labels.Labels
	CommonAnnotations labels.Labels
	Alerts            []NotifiedAlert
	ExternalURL       string
}

// NotifiedAlert is an alert in a notification.
type NotifiedAlert struct {
	Alert
	Status      string // firing or resolved
	Fingerprint string
}

// Firing reports whether any alert of the notification fires.
func (n *Notification) Firing() bool {
	for _, a := range n.Alerts {
		if a.Status == "firing" {
			return true
		}
	}
	return false
}

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tick is how often Run flushes due groups. Default 1s.
	Tick time.Duration
	// QueueSize bounds each receiver's queue of notifications. Default 256.
	QueueSize int
	// MaxAttempts bounds the sends of one notification. Default 8.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts. Defaults
	// 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// MaxAlerts bounds the alerts held. Default 10000.
	MaxAlerts   int
	ExternalURL string
	// ExternalLabels are the hub's external labels (Prometheus'
	// global.external_labels). Routes, grouping and silences see each
	// alert with them, and notifications carry them, as an Alertmanager
	// would get them from Prometheus; an alert's own value for a name
	// wins. The alerts held keep the rules' labels, so fingerprints
	// (deliveries, the console's join with the rules' alerts) do not
	// change.
	ExternalLabels labels.Labels
	Logger         *slog.Logger
}

// Dispatcher routes alerts into groups and hands their notifications to
// receivers.
type Dispatcher struct {
	cfg DispatcherConfig
	log *slog.Logger

	mu       sync.Mutex
	alerts   map[uint64]*Alert
	policies []*policy
	groups   map[string]*group
	silences []compiledSilence
	queues   map[string]*queue // by policy/receiver
	deliv    *deliveries

	ctx    context.Context // of Run; nil before
	wg     sync.WaitGroup
	closed bool
}

// NewDispatcher returns a Dispatcher; Run flushes and sends.
func NewDispatcher(cfg DispatcherConfig) *Dispatcher {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 256
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.MaxAlerts <= 0 {
		cfg.MaxAlerts = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Dispatcher{cfg: cfg, log: cfg.Logger, alerts: map[uint64]*Alert{}, groups: map[string]*group{},
		queues: map[string]*queue{}, deliv: newDeliveries()}
}

// SetPolicies replaces the policies. Groups of routes that no longer
// exist are dropped; groups of unchanged routes keep their state.
func (d *Dispatcher) SetPolicies(ps []*policy) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policies = ps
	byKey := map[string]*policy{}
	for _, p := range ps {
		byKey[p.key] = p
	}
	// Regroup every alert: routes may have changed. Keep the timing of
	// groups whose key survives.
	old := d.groups
	d.groups = map[string]*group{}
	now := d.cfg.Now()
	for _, a := range d.alerts {
		d.insertLocked(a, now)
	}
	for k, g := range d.groups {
		if o, ok := old[k]; ok {
			g.next, g.lastSent, g.lastKey, g.sentAny = o.next, o.lastSent, o.lastKey, o.sentAny
		}
	}
	// Queues of receivers that are gone end; new ones start on use.
	want := map[string]bool{}
	for _, p := range ps {
		for name := range p.receivers {
			want[p.key+"/"+name] = true
		}
	}
	for k, q := range d.queues {
		if !want[k] {
			close(q.ch)
			delete(d.queues, k)
		} else {
			// Replace the integrations (new secrets, URLs) in place.
			pk, name := splitQueueKey(k)
			q.setReceiver(byKey[pk].receivers[name])
		}
	}
}

func splitQueueKey(k string) (string, string) {
	i := strings.LastIndexByte(k, '/')
	return k[:i], k[i+1:]
}

// Put adds or updates alerts (the rule manager resends firing alerts and
// sends resolved ones with their EndsAt).
func (d *Dispatcher) Put(alerts ...*Alert) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Now()
	for _, a := range alerts {
		fp := a.fingerprint()
		if cur, ok := d.alerts[fp]; ok {
			// Keep the earliest start of an alert that keeps firing.
			if !cur.Resolved(now) && cur.StartsAt.Before(a.StartsAt) {
				a.StartsAt = cur.StartsAt
			}
			*cur = *a
			continue
		}
		if len(d.alerts) >= d.cfg.MaxAlerts {
			d.log.Warn("alert dropped: the dispatcher holds its maximum of alerts", "max", d.cfg.MaxAlerts, "alert", a.Labels.String())
			continue
		}
		c := *a
		d.alerts[fp] = &c
		d.insertLocked(&c, now)
	}
}

// external returns ls with the external labels it does not have.
func (d *Dispatcher) external(ls labels.Labels) labels.Labels {
	if d.cfg.ExternalLabels.IsEmpty() {
		return ls
	}
	b := labels.NewBuilder(ls)
	d.cfg.ExternalLabels.Range(func(l labels.Label) {
		if !ls.Has(l.Name) {
			b.Set(l.Name, l.Value)
		}
	})
	return b.Labels()
}

func (d *Dispatcher) insertLocked(a *Alert, now time.Time) {
	fp := a.fingerprint()
	ls := d.external(a.Labels)
	for _, p := range d.policies {
		for _, r := range p.root.match(ls) {
			gl := r.groupLabels(ls)
			key := p.key + ":" + r.id + ":" + gl.String()
			g, ok := d.groups[key]
			if !ok {
				g = &group{key: key, policy: p, route: r, labels: gl, alerts: map[uint64]*Alert{}, next: now.Add(r.groupWait)}
				d.groups[key] = g
			}
			g.alerts[fp] = a
		}
	}
}

// flush sends the notifications of every group due at now. It is the
// dispatcher's whole timing logic; Run calls it every Tick.
func (d *Dispatcher) flush(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(d.groups)) {
		g := d.groups[k]
		if now.Before(g.next) {
			continue
		}
		g.next = now.Add(g.route.groupInterval)
		var firing, resolved []*Alert
		for _, a := range g.alerts {
			switch {
			case a.Resolved(now):
				resolved = append(resolved, a)
			case d.silencedLocked(d.external(a.Labels), now) != "":
			default:
				firing = append(firing, a)
			}
		}
		if !g.sentAny {
			resolved = nil // nobody heard of them
		}
		sortAlerts(firing)
		sortAlerts(resolved)
		key := alertsKey(firing) + "|" + alertsKey(resolved)
		send := len(firing)+len(resolved) > 0 &&
			(key != g.lastKey || (len(firing) > 0 && !now.Before(g.lastSent.Add(g.route.repeatInterval))))
		if len(firing) == 0 && len(resolved) == 0 {
			g.lastKey = key
		}
		if send {
			n := d.notification(g, firing, resolved)
			d.enqueueLocked(g.policy, g.route.receiver, n)
			g.lastSent, g.lastKey, g.sentAny = now, alertsKey(firing)+"|"+alertsKey(nil), len(firing) > 0 || g.sentAny
		}
		for _, a := range resolved {
			delete(g.alerts, a.fingerprint())
		}
		// Resolved alerts nobody was told of leave too.
		for fp, a := range g.alerts {
			if a.Resolved(now) && !g.sentAny {
				delete(g.alerts, fp)
			}
		}
		if len(g.alerts) == 0 {
			delete(d.groups, k)
		}
	}
	// Forget alerts no group holds any more.
	held := map[uint64]bool{}
	for _, g := range d.groups {
		for fp := range g.alerts {
			held[fp] = true
		}
	}
	for fp, a := range d.alerts {
		if !held[fp] && a.Resolved(now) {
			delete(d.alerts, fp)
		}
	}
	d.deliv.retain(func(fp string) bool {
		v, err := strconv.ParseUint(fp, 16, 64)
		_, ok := d.alerts[v]
		return err == nil && ok
	})
}

func sortAlerts(as []*Alert) {
	slices.SortFunc(as, func(a, b *Alert) int { return labels.Compare(a.Labels, b.Labels) })
}

func alertsKey(as []*Alert) string {
	h := fnv.New64a()
	for _, a := range as {
		fmt.Fprintf(h, "%d,", a.fingerprint())
	}
	return strconv.FormatUint(h.Sum64(), 16) + ":" + strconv.Itoa(len(as))
}

func (d *Dispatcher) notification(g *group, firing, resolved []*Alert) *Notification {
	n := &Notification{Receiver: g.route.receiver, Policy: g.policy.key, GroupKey: g.key, GroupLabels: g.labels, ExternalURL: d.cfg.ExternalURL}
	all := make([]*Alert, 0, len(firing)+len(resolved))
	for _, a := range append(slices.Clone(firing), resolved...) {
		st := "firing"
		if a.Resolved(d.cfg.Now()) {
			st = "resolved"
		}
		// The fingerprint stays the held alert's: deliveries are
		// recorded under it.
		na := NotifiedAlert{Alert: *a, Status: st, Fingerprint: fmt.Sprintf("%016x", a.fingerprint())}
		na.Labels = d.external(a.Labels)
		n.Alerts = append(n.Alerts, na)
		all = append(all, &na.Alert)
	}
	n.CommonLabels = common(all, func(a *Alert) labels.Labels { return a.Labels })
	n.CommonAnnotations = common(all, func(a *Alert) labels.Labels { return a.Annotations })
	return n
}

func common(as []*Alert, f func(*Alert) labels.Labels) labels.Labels {
	if len(as) == 0 {
		return labels.EmptyLabels()
	}
	b := labels.NewBuilder(f(as[0]))
	f(as[0]).Range(func(l labels.Label) {
		for _, a := range as[1:] {
			if f(a).Get(l.Name) != l.Value {
				b.Del(l.Name)
				return
			}
		}
	})
	return b.Labels()
}

// AlertStatus is the dispatcher's view of one alert, for the console.
type AlertStatus struct {
	Fingerprint string
	Alert
	SilencedBy []string
	Receivers  []string
	Deliveries []Delivery
}

// Alerts returns the alerts held, sorted by labels.
func (d *Dispatcher) Alerts() []AlertStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Now()
	recv := map[uint64][]string{}
	for _, g := range d.groups {
		for fp := range g.alerts {
			recv[fp] = append(recv[fp], g.policy.key+"/"+g.route.receiver)
		}
	}
	out := make([]AlertStatus, 0, len(d.alerts))
	for fp, a := range d.alerts {
		s := AlertStatus{Fingerprint: fmt.Sprintf("%016x", fp), Alert: *a, Receivers: slices.Compact(slices.Sorted(slices.Values(recv[fp])))}
		if id := d.silencedLocked(d.external(a.Labels), now); id != "" {
			s.SilencedBy = []string{id}
		}
		s.Deliveries = d.deliv.of(s.Fingerprint)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b AlertStatus) int { return labels.Compare(a.Labels, b.Labels) })
	return out
}
