// Haul console: the only script. Loaded from /assets (the CSP forbids inline script).
// Forms marked data-confirm ask before destructive actions.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    ev.preventDefault();
  }
});
