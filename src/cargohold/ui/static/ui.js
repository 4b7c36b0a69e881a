// cargohold web UI: copy buttons and search as you type. Everything works without it.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy");
    if (!button) { return; }
    var text = button.getAttribute("data-copy") || "";
    var label = button.textContent;
    copyText(text).then(function () {
      button.textContent = "Copied";
      button.classList.add("done");
      document.body.setAttribute("data-copied", text);
    }, function () {
      button.textContent = "Press Ctrl+C";
      var code = button.parentNode.querySelector("code");
      if (code) {
        var range = document.createRange();
        range.selectNodeContents(code);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
    });
    window.setTimeout(function () {
      button.textContent = label;
      button.classList.remove("done");
    }, 1600);
  });

  // Search as you type: the form's GET is fetched with a marker header and the server answers
  // with only the results fragment, which replaces the old one.
  var pending = null;
  var seq = 0;
  function liveSearch(form) {
    var target = document.querySelector(form.getAttribute("data-live"));
    if (!target) { return; }
    var params = new URLSearchParams(new FormData(form));
    if (!params.get("q")) { params.delete("q"); }
    var query = params.toString();
    var url = form.getAttribute("action") + (query ? "?" + query : "");
    var mine = ++seq;
    fetch(url, { headers: { "X-Requested-With": "cargohold-ui" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null || mine !== seq) { return; }
        target.innerHTML = html;
        window.history.replaceState(null, "", url);
        target.setAttribute("data-loaded", String(mine));
      })
      .catch(function () { /* the form still works with Enter */ });
  }
  document.querySelectorAll("form[data-live]").forEach(function (form) {
    var input = form.querySelector("input[type=search]");
    if (!input) { return; }
    input.addEventListener("input", function () {
      window.clearTimeout(pending);
      pending = window.setTimeout(function () { liveSearch(form); }, 180);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      window.clearTimeout(pending);
      liveSearch(form);
    });
  });

  // "/" focuses the search box, as on most sites with one.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var tag = (document.activeElement && document.activeElement.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA") { return; }
    var search = document.querySelector("input[type=search]");
    if (search) { event.preventDefault(); search.focus(); search.select(); }
  });
})();
