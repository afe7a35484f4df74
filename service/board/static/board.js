// The wait board's page: renders the data the server embedded, then follows /events.
// Every name comes from producers: it only ever reaches the page through textContent.
"use strict";
(function () {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const tenant = boot.tenant;
  const board = document.getElementById("board");
  const status = document.getElementById("status");
  const picker = document.getElementById("picker");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "pending";
    const whole = Math.round(seconds);
    return Math.floor(whole / 60) + "m " + String(whole % 60).padStart(2, "0") + "s";
  }

  function tenantUrl(name) {
    return "/tenants/" + encodeURIComponent(name);
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  // The 2021 event shape has no tenant: its orders are tenant "", a tenant like any other.
  function label(name) {
    return name === "" ? "(no tenant: the 2021 events)" : name;
  }

  function renderPicker(tenants) {
    const options = [el("option", "", tenants.length ? "choose a tenant" : "no tenant yet")];
    options[0].value = "";
    for (const name of tenants) {
      const option = el("option", "", label(name));
      option.value = name;
      option.selected = name === tenant;
      options.push(option);
    }
    picker.replaceChildren(...options);
  }

  function figure(list, label, value, className) {
    list.append(el("dt", "", label), el("dd", className, value));
  }

  function renderView(view) {
    const parts = [];
    const ahead = view.openOrders === null ? "pending" : String(view.openOrders);
    parts.push(el("p", "summary", "Orders ahead: " + ahead));
    if (!view.drinks.length) {
      parts.push(el("p", "empty", "Nothing has arrived yet for this tenant: drinks appear with its first estimate or average."));
    }
    const list = el("ul", "drinks");
    for (const row of view.drinks) {
      const item = el("li", "drink");
      item.append(el("h2", "", row.drink));
      const figures = el("dl");
      figure(figures, "Estimate", duration(row.estimate), "estimate");
      figure(figures, "p90", duration(row.p90), "p90");
      figure(figures, "Orders ahead", ahead, "ahead");
      const label = row.window ? "Average (last " + row.window + ")" : "Average";
      figure(figures, label, duration(row.average), "average");
      item.append(figures);
      list.append(item);
    }
    parts.push(list);
    board.replaceChildren(...parts);
  }

  function renderIndex(data) {
    if (data.missing !== undefined) {
      board.replaceChildren(
        el("h2", "", "No such tenant"),
        el("p", "empty", "Tenant \u201c" + data.missing + "\u201d " + data.why + ".")
      );
      return;
    }
    if (!data.tenants.length) {
      board.replaceChildren(el("p", "empty", "Nothing has arrived yet: tenants appear with their first estimate or average."));
      return;
    }
    const list = el("ul", "tenants");
    for (const name of data.tenants) {
      const link = el("a", "", label(name));
      link.href = tenantUrl(name);
      const item = el("li");
      item.append(link);
      list.append(item);
    }
    board.replaceChildren(el("h2", "", "Tenants"), list);
  }

  function render(data) {
    renderPicker(data.tenants);
    if (tenant === null) renderIndex(data);
    else renderView(data.view);
  }

  function connect() {
    const url = "/events" + (tenant === null ? "" : "?tenant=" + encodeURIComponent(tenant));
    const source = new EventSource(url);
    source.addEventListener("board", function (event) {
      setStatus("live", "live");
      render(JSON.parse(event.data));
    });
    source.addEventListener("open", function () { setStatus("live", "live"); });
    source.addEventListener("error", function () {
      setStatus("lost", "reconnecting\u2026");
      // EventSource retries by itself unless the server refused (503, 404): then we do,
      // unless the tenant is gone from the board (404): the page then says so.
      if (source.readyState !== EventSource.CLOSED) return;
      if (tenant === null) { setTimeout(connect, 5000); return; }
      fetch("/view.json?tenant=" + encodeURIComponent(tenant)).then(function (answer) {
        if (answer.status === 404) window.location.reload();
        else setTimeout(connect, 5000);
      }, function () { setTimeout(connect, 5000); });
    });
  }

  picker.addEventListener("change", function () {
    // The first option is the prompt; any other is a tenant, "" included.
    if (picker.selectedIndex > 0) window.location.href = tenantUrl(picker.value);
  });
  if (tenant !== null) document.getElementById("heading").textContent = label(tenant);
  render(boot);
  if (boot.missing === undefined) connect();
  else setStatus("lost", "not found");
})();
