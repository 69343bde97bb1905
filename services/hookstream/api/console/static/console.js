// The console's only script: copy buttons and confirmations. Pages work without it, minus
// those two conveniences. Served from /console/static: the CSP allows no inline script.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied to the clipboard.";
  } catch (error) {
    // No clipboard access (an insecure origin or a refused permission): select it instead.
    field.select();
    if (status) status.textContent = "Press Ctrl+C (⌘C) to copy the selected secret.";
  }
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
