// The traders' live pages: a WebSocket client for `/ws`, the market page (order book,
// trades, candles, ticker, private order/balance refresh) and the markets list's tickers.
// Dependency-free apart from Chart.js (vendored) for the candles and htmx for fragments.
// Every number shown comes from the server as a decimal string; floats are used only to
// draw (bar widths, chart), never to decide anything.

(function () {
  "use strict";

  // --- The stream client -------------------------------------------------------------------
  // One connection: SUBSCRIBE (with an `id`, so the server acks) to every topic asked for,
  // reconnect with exponential backoff and jitter after any close, resubscribe, then call
  // the onOpen hooks (which resync what may have been missed). Private topics (`account.*`)
  // go in a request of their own: the server refuses a whole request whose private part it
  // cannot authenticate, and the public part must not fall with it. Browsers authenticate
  // private topics with the session cookie the handshake carries.
  var MIN_DELAY = 500;
  var MAX_DELAY = 15000;

  function BourseStream(options) {
    options = options || {};
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    this.url = options.url || scheme + window.location.host + (options.path || "/ws");
    this.topics = new Set();
    this.handlers = [];        // [{prefix, fn}]
    this.openHandlers = [];    // called after every (re)connect, once subscriptions are sent
    this.stateHandlers = [];
    this.nextId = 1;
    this.pending = {};         // request id → topics, to report refusals
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.closed = false;
  }

  BourseStream.prototype.on = function (prefix, fn) {
    this.handlers.push({ prefix: prefix, fn: fn });
    return this;
  };
  BourseStream.prototype.onOpen = function (fn) { this.openHandlers.push(fn); return this; };
  BourseStream.prototype.onState = function (fn) { this.stateHandlers.push(fn); return this; };

  BourseStream.prototype._state = function (state) {
    this.state = state;
    this.stateHandlers.forEach(function (fn) { fn(state); });
  };

  BourseStream.prototype.connect = function () {
    var self = this;
    if (this.closed) return this;
    this._state(this.attempt ? "reconnecting" : "connecting");
    var socket;
    try {
      socket = new WebSocket(this.url);
    } catch (e) {
      this._schedule();
      return this;
    }
    this.socket = socket;
    socket.onopen = function () {
      self.attempt = 0;
      self._state("live");
      self._send("SUBSCRIBE", Array.from(self.topics));
      self.openHandlers.forEach(function (fn) { fn(); });
    };
    socket.onmessage = function (event) { self._receive(event.data); };
    socket.onclose = function () {
      if (self.socket !== socket) return;
      self.socket = null;
      self._schedule();
    };
    socket.onerror = function () { /* onclose follows and reconnects */ };
    return this;
  };

  BourseStream.prototype._schedule = function () {
    if (this.closed || this.timer) return;
    var self = this;
    var delay = Math.min(MAX_DELAY, MIN_DELAY * Math.pow(2, this.attempt));
    delay = delay / 2 + Math.random() * delay / 2;  // jitter: a restarted server is not stampeded
    this.attempt += 1;
    this._state("reconnecting");
    this.timer = setTimeout(function () { self.timer = null; self.connect(); }, delay);
  };

  BourseStream.prototype._send = function (method, topics) {
    if (!topics.length || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    var isPrivate = function (t) { return t.indexOf("account.") === 0; };
    var groups = [topics.filter(function (t) { return !isPrivate(t); }), topics.filter(isPrivate)];
    for (var i = 0; i < groups.length; i++) {
      if (!groups[i].length) continue;
      var id = this.nextId++;
      this.pending[id] = groups[i];
      this.socket.send(JSON.stringify({ method: method, params: groups[i], id: id }));
    }
  };

  BourseStream.prototype.subscribe = function (topics) {
    var fresh = topics.filter(function (t) { return !this.topics.has(t); }, this);
    fresh.forEach(function (t) { this.topics.add(t); }, this);
    this._send("SUBSCRIBE", fresh);
  };

  BourseStream.prototype.unsubscribe = function (topics) {
    var known = topics.filter(function (t) { return this.topics.has(t); }, this);
    known.forEach(function (t) { this.topics.delete(t); }, this);
    this._send("UNSUBSCRIBE", known);
  };

  BourseStream.prototype._receive = function (raw) {
    var message;
    try { message = JSON.parse(raw); } catch (e) { return; }
    if (message.error) {
      var topics = this.pending[message.id] || [];
      if (window.console) console.warn("Bourse stream refused", topics, message.error);
      delete this.pending[message.id];
      return;
    }
    if (message.id !== undefined && message.result !== undefined) { delete this.pending[message.id]; return; }
    if (!message.stream || !message.data) return;
    for (var i = 0; i < this.handlers.length; i++) {
      var h = this.handlers[i];
      if (message.stream === h.prefix || message.stream.indexOf(h.prefix + ".") === 0) {
        try { h.fn(message.data, message.stream); } catch (e) { if (window.console) console.error(e); }
      }
    }
  };

  window.BourseStream = BourseStream;

  // --- Formatting ----------------------------------------------------------------------------
  var formatters = {};
  function fmt(value, places, grouping) {
    if (value === null || value === undefined || value === "") return "—";
    var key = places + (grouping === false ? "n" : "g");
    if (!formatters[key]) {
      formatters[key] = new Intl.NumberFormat("en-US", {
        minimumFractionDigits: places, maximumFractionDigits: places, useGrouping: grouping !== false,
      });
    }
    return formatters[key].format(Number(value));
  }
  function pct(fraction) {
    if (fraction === null || fraction === undefined || isNaN(fraction)) return "—";
    var v = fraction * 100;
    return (v > 0 ? "+" : "") + v.toFixed(2) + "%";
  }
  function compact(value) {
    var n = Number(value);
    if (!isFinite(n)) return "—";
    if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + "B";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "K";
    return fmt(n, n % 1 === 0 ? 0 : 2);
  }
  function text(el, value) { if (el && el.textContent !== value) el.textContent = value; }
  function signClass(el, n) {
    if (!el) return;
    el.classList.toggle("up", n > 0);
    el.classList.toggle("down", n < 0);
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(url + " answered " + r.status);
      return r.json();
    });
  }
  // Stream times are µs, REST times ms, kline times s: bring any of them to seconds.
  function toSeconds(t) {
    t = Number(t);
    if (t > 1e14) return t / 1e6;
    if (t > 1e11) return t / 1e3;
    return t;
  }

  // --- The market page -----------------------------------------------------------------------
  function MarketPage(config) {
    this.c = config;
    this.sym = config.symbol;
    this.pp = config.pricePlaces;
    this.qp = config.qtyPlaces;
    this.book = { bids: new Map(), asks: new Map(), lastUpdateId: 0, synced: false, buffer: [], resyncTimer: null };
    this.trades = [];
    this.tradeIds = new Set();
    this.lastPrice = null;
    this.prevPrice = null;
    this.interval = config.intervals[0];
    this.candles = [];
    this.shown = [];         // the candles drawn, gaps filled (set by each render)
    this.chart = null;
    this.renderQueued = false;
    this.stream = new BourseStream({ path: config.wsPath });
    this.expected = {};      // order id → status announced by the stream, not yet shown
    this.expectTries = 0;
  }

  MarketPage.prototype.start = function () {
    var self = this;
    var s = this.stream;
    var sym = this.sym;
    this.applySnapshot(this.c.snapshot);
    if (this.c.lastPrice) this.setLast(this.c.lastPrice);
    s.onState(function (state) {
      var el = document.getElementById("ws-status");
      if (!el) return;
      el.dataset.state = state;
      el.textContent = state === "live" ? "Live" : state === "connecting" ? "Connecting" : "Reconnecting";
    });
    s.on("depth." + sym, function (d) { self.onDepth(d); });
    s.on("trade." + sym, function (d) { self.onTrade(d); });
    s.on("ticker." + sym, function (d) { self.onTicker(d); });
    s.on("kline", function (d, stream) { if (stream === "kline." + self.interval + "." + sym) self.onKline(d); });
    s.on("account.orderUpdate", function (d) {
      if (d.s && d.s !== sym) return;
      if (d.i && d.X) self.expected[d.i] = d.X;
      self.privateChanged("ordersChanged");
    });
    s.on("account.balanceUpdate", function () { self.privateChanged("balancesChanged"); });
    var topics = ["depth." + sym, "trade." + sym, "ticker." + sym, "kline." + this.interval + "." + sym];
    if (this.c.authenticated) topics.push("account.orderUpdate." + sym, "account.balanceUpdate");
    s.subscribe(topics);
    var connects = 0;
    s.onOpen(function () {
      connects += 1;
      // The page's snapshot is exact with the deltas that follow it, and a gap in U/u
      // triggers a resync; after a reconnect, deltas were certainly missed.
      if (connects > 1) {
        self.resyncBook();
        self.loadTrades();
        self.loadTicker();
        self.loadCandles();
        if (self.c.authenticated) { self.privateChanged("ordersChanged"); self.privateChanged("balancesChanged"); }
      }
    });
    s.connect();
    this.loadTrades();
    this.loadTicker();
    this.initChart();
    this.bindUI();
    this.renderBook();
  };

  // The engine announces an order's new state as it happens; the database has it only
  // once the DB processor commits, a moment later. So after each refresh of my orders,
  // check that every announced state is shown, and ask again (backing off) until it is.
  MarketPage.prototype.checkExpected = function () {
    var self = this;
    var box = document.getElementById("my-orders");
    if (!box) return;
    var missing = Object.keys(this.expected).filter(function (id) {
      if (box.querySelector('tr[data-order-id="' + id + '"][data-status="' + self.expected[id] + '"]')) {
        delete self.expected[id];
        return false;
      }
      return true;
    });
    if (!missing.length) { this.expectTries = 0; return; }
    if (this.expectTries >= 8) { this.expected = {}; this.expectTries = 0; return; }
    var delay = 200 * Math.pow(2, this.expectTries++);
    clearTimeout(this.expectTimer);
    this.expectTimer = setTimeout(function () { self.privateChanged("ordersChanged"); }, delay);
  };

  // Private frames come in bursts (accepted, fill, update): one fragment refresh per burst.
  MarketPage.prototype.privateChanged = function (eventName) {
    var self = this;
    this._private = this._private || {};
    if (this._private[eventName]) return;
    this._private[eventName] = setTimeout(function () {
      self._private[eventName] = null;
      if (window.htmx) window.htmx.trigger(document.body, eventName);
    }, 120);
  };

  // --- Order book: REST snapshot + `depth` deltas, exactly once -----------------------------
  MarketPage.prototype.applySnapshot = function (snap) {
    var b = this.book;
    b.bids = new Map((snap.bids || []).map(function (l) { return [l[0], l[1]]; }));
    b.asks = new Map((snap.asks || []).map(function (l) { return [l[0], l[1]]; }));
    b.lastUpdateId = Number(snap.lastUpdateId || 0);
    b.synced = true;
    var buffered = b.buffer;
    b.buffer = [];
    for (var i = 0; i < buffered.length; i++) this.onDepth(buffered[i]);
    this.queueRender();
  };

  MarketPage.prototype.onDepth = function (d) {
    var b = this.book;
    if (!b.synced) { b.buffer.push(d); return; }
    var U = Number(d.U), u = Number(d.u);
    if (u <= b.lastUpdateId) return;                  // already in the snapshot
    if (U > b.lastUpdateId + 1) { this.resyncBook(); b.buffer.push(d); return; }  // a gap
    var apply = function (map, levels) {
      for (var i = 0; i < levels.length; i++) {
        if (Number(levels[i][1]) === 0) map.delete(levels[i][0]);
        else map.set(levels[i][0], levels[i][1]);
      }
    };
    apply(b.bids, d.b || []);
    apply(b.asks, d.a || []);
    b.lastUpdateId = u;
    this.queueRender();
  };

  MarketPage.prototype.resyncBook = function () {
    var self = this;
    var b = this.book;
    if (b.resyncTimer === "busy") return;
    b.synced = false;
    b.buffer = [];
    b.resyncTimer = "busy";
    var url = this.c.api.depth + "?symbol=" + encodeURIComponent(this.sym) + "&limit=100";
    getJSON(url).then(function (snap) {
      b.resyncTimer = null;
      self.applySnapshot(snap);
    }).catch(function () {
      b.resyncTimer = setTimeout(function () { b.resyncTimer = null; self.resyncBook(); }, 2000);
    });
  };

  MarketPage.prototype.queueRender = function () {
    var self = this;
    if (this.renderQueued) return;
    this.renderQueued = true;
    window.requestAnimationFrame(function () { self.renderQueued = false; self.renderBook(); });
  };

  MarketPage.prototype.renderBook = function () {
    var n = this.c.bookLevels;
    var pp = this.pp, qp = this.qp;
    var byPrice = function (a, b) { return Number(a[0]) - Number(b[0]); };
    var asks = Array.from(this.book.asks.entries()).sort(byPrice).slice(0, n);
    var bids = Array.from(this.book.bids.entries()).sort(byPrice).reverse().slice(0, n);
    var max = 0;
    asks.concat(bids).forEach(function (l) { max = Math.max(max, Number(l[1])); });
    var rows = function (levels, side) {
      var total = 0;
      var out = levels.map(function (l) {
        total += Number(l[1]);
        var width = max ? Math.max(1, Math.round(Number(l[1]) / max * 100)) : 0;
        return '<li class="book__row" data-price="' + l[0] + '" data-side="' + side + '">' +
          '<span class="book__bar" style="width:' + width + '%"></span>' +
          '<span class="book__price">' + fmt(l[0], pp) + '</span>' +
          '<span class="book__size">' + fmt(l[1], qp) + '</span>' +
          '<span class="book__total">' + fmt(total, qp) + '</span></li>';
      });
      return out;
    };
    var askRows = rows(asks, "ask").reverse();  // the best ask sits next to the spread
    var bidRows = rows(bids, "bid");
    var empty = '<li class="book__empty">—</li>';
    document.getElementById("book-asks").innerHTML = askRows.length ? askRows.join("") : empty;
    document.getElementById("book-bids").innerHTML = bidRows.length ? bidRows.join("") : empty;
    var spread = document.getElementById("book-spread");
    if (asks.length && bids.length) {
      var s = Number(asks[0][0]) - Number(bids[0][0]);
      text(spread, "Spread " + fmt(s, pp) + " (" + (s / Number(asks[0][0]) * 100).toFixed(2) + "%)");
    } else {
      text(spread, "");
    }
    text(document.getElementById("book-update"), this.book.lastUpdateId ? "#" + this.book.lastUpdateId : "");
    var best = document.getElementById("book-levels");
    if (best) best.textContent = bids.length + asks.length;
  };

  // --- Trades and the last price ---------------------------------------------------------------
  MarketPage.prototype.loadTrades = function () {
    var self = this;
    getJSON(this.c.api.trades + "?symbol=" + encodeURIComponent(this.sym) + "&limit=60").then(function (rows) {
      // Backpack answers oldest first; the list shows newest first.
      rows = rows.slice().sort(function (a, b) { return Number(a.id) - Number(b.id); });
      rows.forEach(function (t) {
        self.addTrade({ id: String(t.id), p: t.price, q: t.quantity, ts: toSeconds(t.timestamp), sell: !!t.isBuyerMaker }, false);
      });
      self.renderTrades();
      if (!self.candlesLoaded) self.loadCandles();
    }).catch(function () { if (!self.candlesLoaded) self.loadCandles(); });
  };

  MarketPage.prototype.addTrade = function (t, live) {
    if (this.tradeIds.has(t.id)) return false;
    this.tradeIds.add(t.id);
    this.trades.unshift(t);
    if (this.trades.length > 60) this.tradeIds.delete(this.trades.pop().id);
    this.trades.sort(function (a, b) { return Number(b.id) - Number(a.id); });
    this.setLast(this.trades[0].p);
    if (live) this.candleTrade(t);
    return true;
  };

  MarketPage.prototype.onTrade = function (d) {
    var t = { id: String(d.t), p: d.p, q: d.q, ts: toSeconds(d.T || d.E), sell: !!d.m, fresh: true };
    if (this.addTrade(t, true)) this.renderTrades();
  };

  MarketPage.prototype.renderTrades = function () {
    var pp = this.pp, qp = this.qp;
    var html = this.trades.map(function (t) {
      var time = new Date(t.ts * 1000).toLocaleTimeString("en-GB", { hour12: false });
      var cls = "trade " + (t.sell ? "trade--sell" : "trade--buy") + (t.fresh ? " is-fresh" : "");
      t.fresh = false;
      return '<li class="' + cls + '" data-trade-id="' + t.id + '"><span class="trade__price">' + fmt(t.p, pp) +
        '</span><span class="trade__size">' + fmt(t.q, qp) + '</span><span class="trade__time">' + time + "</span></li>";
    }).join("");
    document.getElementById("trades-list").innerHTML = html;
    document.getElementById("trades-empty").hidden = this.trades.length > 0;
  };

  MarketPage.prototype.setLast = function (price) {
    if (price === this.lastPrice) return;
    this.prevPrice = this.lastPrice;
    this.lastPrice = price;
    var dir = this.prevPrice === null ? "" : Number(price) >= Number(this.prevPrice) ? "up" : "down";
    var last = document.getElementById("ticker-last");
    text(last, fmt(price, this.pp));
    if (dir) last.dataset.dir = dir;
    var mid = document.getElementById("book-last");
    text(mid, fmt(price, this.pp));
    mid.className = "book__last" + (dir ? " " + dir : "");
    document.title = fmt(price, this.pp) + " " + this.c.base + "/" + this.c.quote + " · Bourse";
  };

  // --- Ticker ----------------------------------------------------------------------------------
  MarketPage.prototype.loadTicker = function () {
    var self = this;
    getJSON(this.c.api.ticker + "?symbol=" + encodeURIComponent(this.sym)).then(function (t) {
      self.showTicker({
        last: t.lastPrice, change: t.priceChangePercent !== undefined ? Number(t.priceChangePercent) : null,
        high: t.high, low: t.low, volume: t.volume, quoteVolume: t.quoteVolume,
      });
    }).catch(function () { /* the header keeps what it has; the ticker stream fills it */ });
  };

  MarketPage.prototype.onTicker = function (d) {
    var open = Number(d.o), close = Number(d.c);
    this.showTicker({ last: d.c, change: open ? (close - open) / open : null, high: d.h, low: d.l, volume: d.v, quoteVolume: d.V });
  };

  MarketPage.prototype.showTicker = function (t) {
    if (t.last !== null && t.last !== undefined && this.lastPrice === null) this.setLast(t.last);
    var change = document.getElementById("ticker-change");
    text(change, t.change === null ? "—" : pct(t.change));
    signClass(change, t.change);
    text(document.getElementById("ticker-high"), fmt(t.high, this.pp));
    text(document.getElementById("ticker-low"), fmt(t.low, this.pp));
    text(document.getElementById("ticker-volume"), t.volume === undefined ? "—" : compact(t.volume));
    text(document.getElementById("ticker-quote-volume"), t.quoteVolume === undefined ? "—" : compact(t.quoteVolume));
  };

  // --- Candles ---------------------------------------------------------------------------------
  var WIDTH = { "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
                "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800 };
  var SHOWN = 120;  // candles on screen

  MarketPage.prototype.width = function () { return WIDTH[this.interval] || 60; };

  MarketPage.prototype.loadCandles = function () {
    var self = this;
    var interval = this.interval;
    var now = Math.floor(Date.now() / 1000);
    var url = this.c.api.klines + "?symbol=" + encodeURIComponent(this.sym) + "&interval=" + interval +
      "&startTime=" + (now - SHOWN * this.width()) + "&endTime=" + (now + this.width());
    getJSON(url).then(function (rows) {
      if (interval !== self.interval) return;
      self.candles = rows.map(function (k) {
        // "YYYY-MM-DD HH:MM:SS" in UTC.
        var t = Date.parse(String(k.start).replace(" ", "T") + "Z") / 1000;
        return { t: t, o: Number(k.open), h: Number(k.high), l: Number(k.low), c: Number(k.close), v: Number(k.volume) };
      }).sort(function (a, b) { return a.t - b.t; });
      self.candlesLoaded = true;
      self.drawCandles();
    }).catch(function () {
      // No klines endpoint (or it failed): build the candles from the recent trades.
      if (interval !== self.interval) return;
      self.candles = [];
      self.trades.slice().reverse().forEach(function (t) { self.candleTrade(t, true); });
      self.candlesLoaded = true;
      self.drawCandles();
    });
  };

  MarketPage.prototype.candleTrade = function (t, quiet) {
    var w = this.width();
    var start = Math.floor(t.ts / w) * w;
    var p = Number(t.p), q = Number(t.q);
    var last = this.candles[this.candles.length - 1];
    if (last && last.t === start) {
      last.h = Math.max(last.h, p); last.l = Math.min(last.l, p); last.c = p; last.v += q;
    } else if (!last || start > last.t) {
      this.candles.push({ t: start, o: p, h: p, l: p, c: p, v: q });
    } else {
      return;  // older than the newest candle: already counted by the klines answer
    }
    if (!quiet) this.drawCandles();
  };

  MarketPage.prototype.onKline = function (k) {
    // The stream's candle is the stored one, written after the trades it counts: it
    // replaces whatever the trades built.
    var candle = { t: Math.floor(toSeconds(k.t)), o: Number(k.o), h: Number(k.h), l: Number(k.l), c: Number(k.c), v: Number(k.v) };
    var i = this.candles.length - 1;
    while (i >= 0 && this.candles[i].t > candle.t) i--;
    if (i >= 0 && this.candles[i].t === candle.t) this.candles[i] = candle;
    else this.candles.splice(i + 1, 0, candle);
    this.drawCandles();
  };

  // Minutes without trades have no candle: draw them flat at the previous close, as
  // exchanges do, so the time axis is even.
  MarketPage.prototype.filled = function () {
    var w = this.width(), out = [];
    for (var i = 0; i < this.candles.length; i++) {
      var k = this.candles[i], prev = out[out.length - 1];
      if (prev) {
        var gap = (k.t - prev.t) / w;
        if (gap > 1 && gap < 400) {
          for (var t = prev.t + w; t < k.t; t += w) out.push({ t: t, o: prev.c, h: prev.c, l: prev.c, c: prev.c, v: 0, flat: true });
        }
      }
      out.push(k);
    }
    return out.slice(-SHOWN);
  };

  MarketPage.prototype.initChart = function () {
    var self = this;
    var canvas = document.getElementById("kline-chart");
    if (!window.Chart || !canvas) { this.loadCandles(); return; }
    var css = getComputedStyle(document.documentElement);
    var UP = css.getPropertyValue("--up").trim() || "#0f9d6b";
    var DOWN = css.getPropertyValue("--down").trim() || "#d9304f";
    var color = function (alpha) {
      return function (ctx) {
        var k = self.shown && self.shown[ctx.dataIndex];
        if (!k) return UP;
        var c = k.c >= k.o ? UP : DOWN;
        return alpha ? c + alpha : c;
      };
    };
    this.chart = new window.Chart(canvas, {
      type: "bar",
      data: { labels: [], datasets: [
        { label: "Range", data: [], backgroundColor: color(), barPercentage: 0.12, categoryPercentage: 1, grouped: false, order: 2, yAxisID: "y" },
        { label: "Body", data: [], backgroundColor: color(), barPercentage: 0.7, categoryPercentage: 1, grouped: false, order: 1, yAxisID: "y", minBarLength: 1 },
        { label: "Volume", data: [], backgroundColor: color("40"), barPercentage: 0.7, categoryPercentage: 1, grouped: false, order: 3, yAxisID: "vol" },
      ] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, normalized: true,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: false },
          tooltip: {
            filter: function (item) { return item.datasetIndex === 1; },
            callbacks: {
              label: function (ctx) {
                var k = self.shown[ctx.dataIndex];
                return ["O " + fmt(k.o, self.pp) + "  H " + fmt(k.h, self.pp), "L " + fmt(k.l, self.pp) + "  C " + fmt(k.c, self.pp), "Vol " + compact(k.v)];
              },
            },
          },
        },
        scales: {
          x: { grid: { display: false }, ticks: { maxTicksLimit: 8, maxRotation: 0, color: "#7a8597", font: { size: 11 } } },
          y: { position: "right", beginAtZero: false, grace: "8%", grid: { color: "#eef1f5" }, ticks: { color: "#7a8597", font: { size: 11 }, callback: function (v) { return fmt(v, self.pp); } } },
          vol: { display: false, beginAtZero: true },
        },
      },
    });
    document.querySelectorAll("[data-interval]").forEach(function (button) {
      button.addEventListener("click", function () { self.setInterval(button.dataset.interval); });
    });
    this.loadCandles();
  };

  MarketPage.prototype.setInterval = function (interval) {
    if (interval === this.interval) return;
    this.stream.unsubscribe(["kline." + this.interval + "." + this.sym]);
    this.interval = interval;
    this.stream.subscribe(["kline." + interval + "." + this.sym]);
    document.querySelectorAll("[data-interval]").forEach(function (b) {
      var on = b.dataset.interval === interval;
      b.classList.toggle("is-active", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    this.candles = [];
    this.shown = [];         // the candles drawn, gaps filled (set by each render)
    this.candlesLoaded = false;
    this.drawCandles();
    this.loadCandles();
  };

  MarketPage.prototype.drawCandles = function () {
    var shown = this.filled();
    this.shown = shown;
    document.getElementById("chart-empty").hidden = shown.length > 0 || !this.candlesLoaded;
    var legend = document.getElementById("chart-legend");
    var k = shown[shown.length - 1];
    if (legend) {
      legend.innerHTML = k ? ("O <b>" + fmt(k.o, this.pp) + "</b> H <b>" + fmt(k.h, this.pp) + "</b> L <b>" + fmt(k.l, this.pp) +
        "</b> C <b class=\"" + (k.c >= k.o ? "up" : "down") + "\">" + fmt(k.c, this.pp) + "</b>") : "";
    }
    if (!this.chart) return;
    var daily = this.width() >= 86400;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    this.chart.data.labels = shown.map(function (c) {
      var d = new Date(c.t * 1000);
      return daily ? pad(d.getMonth() + 1) + "-" + pad(d.getDate()) : pad(d.getHours()) + ":" + pad(d.getMinutes());
    });
    this.chart.data.datasets[0].data = shown.map(function (c) { return [c.l, c.h]; });
    this.chart.data.datasets[1].data = shown.map(function (c) { return [c.o, c.c]; });
    this.chart.data.datasets[2].data = shown.map(function (c) { return c.v; });
    var maxVol = shown.reduce(function (m, c) { return Math.max(m, c.v); }, 0);
    // Volume bars fill the bottom fifth, under the candles.
    this.chart.options.scales.vol.max = maxVol ? maxVol * 5 : 1;
    this.chart.update("none");
  };

  // --- Order form conveniences -------------------------------------------------------------------
  MarketPage.prototype.bindUI = function () {
    var self = this;
    // A click on a book level copies its price into the order form.
    document.getElementById("book").addEventListener("click", function (event) {
      var row = event.target.closest(".book__row");
      var price = document.querySelector("#order-form [name=price]");
      if (!row || !price) return;
      price.value = row.dataset.price;
      self.updateTotal();
    });
    document.addEventListener("input", function (event) {
      if (event.target.closest && event.target.closest("#order-form")) self.updateTotal();
    });
    document.addEventListener("change", function (event) {
      if (event.target.closest && event.target.closest("#order-form")) self.updateTotal();
    });
    document.body.addEventListener("htmx:afterSettle", function (event) {
      self.updateTotal();
      // (For an outerHTML swap the event's target is not reliably the new element.)
      if (Object.keys(self.expected).length) self.checkExpected();
    });
    this.updateTotal();
  };

  MarketPage.prototype.updateTotal = function () {
    var form = document.getElementById("order-form");
    var out = document.getElementById("order-total");
    if (!form || !out) return;
    var type = form.querySelector("[name=order_type]:checked");
    var qty = Number(form.querySelector("[name=quantity]").value);
    var price = type && type.value === "Market" ? Number(this.lastPrice) : Number(form.querySelector("[name=price]").value);
    out.textContent = qty > 0 && price > 0 ? fmt(qty * price, this.pp) : "—";
  };

  // --- The markets list: last price and 24h stats from the ticker streams -----------------------
  function MarketsList(table) {
    this.table = table;
    this.rows = {};
    var self = this;
    table.querySelectorAll("tr[data-symbol]").forEach(function (row) { self.rows[row.dataset.symbol] = row; });
  }

  MarketsList.prototype.start = function () {
    var self = this;
    var symbols = Object.keys(this.rows);
    if (!symbols.length) return;
    var stream = new BourseStream({ path: "/ws" });
    stream.on("ticker", function (d) {
      var open = Number(d.o), close = Number(d.c);
      self.show(d.s, { last: d.c, change: open ? (close - open) / open : null, high: d.h, low: d.l, volume: d.v });
    });
    stream.subscribe(symbols.map(function (s) { return "ticker." + s; }));
    stream.connect();
    getJSON("/api/v1/tickers").then(function (tickers) {
      tickers.forEach(function (t) {
        self.show(t.symbol, { last: t.lastPrice, change: t.priceChangePercent === undefined ? null : Number(t.priceChangePercent),
          high: t.high, low: t.low, volume: t.volume });
      });
    }).catch(function () { /* the server's first values stay */ });
  };

  MarketsList.prototype.show = function (symbol, t) {
    var row = this.rows[symbol];
    if (!row) return;
    var pp = Number(row.dataset.pricePlaces || 2);
    var cell = function (name) { return row.querySelector('[data-field="' + name + '"]'); };
    if (t.last !== null && t.last !== undefined) text(cell("last"), fmt(t.last, pp));
    if (t.change !== null && t.change !== undefined && !isNaN(t.change)) {
      text(cell("change"), pct(t.change));
      signClass(cell("change"), t.change);
    }
    if (t.high !== undefined && t.high !== null) text(cell("high"), fmt(t.high, pp));
    if (t.low !== undefined && t.low !== null) text(cell("low"), fmt(t.low, pp));
    if (t.volume !== undefined && t.volume !== null) text(cell("volume"), compact(t.volume));
  };

  // --- Start --------------------------------------------------------------------------------------
  function start() {
    var config = document.getElementById("market-config");
    if (config) {
      var page = new MarketPage(JSON.parse(config.textContent));
      window.bourseMarket = page;
      page.start();
    }
    var table = document.getElementById("markets-table");
    if (table) new MarketsList(table).start();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
