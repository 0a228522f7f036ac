// @ts-check
// The app's modal dialog (instead of the browser's confirm()): a title, a body, and a confirm button
// that a form inside the body can keep disabled until its choice is valid.
import { h } from './dom.js';

/**
 * @typedef {object} DialogOptions
 * @property {string} title
 * @property {import('./app-types.d.ts').Children[]} body
 * @property {string | (() => string)} confirmLabel
 * @property {string} [cancelLabel]
 * @property {boolean} [danger]
 * @property {() => boolean} [canConfirm] re-evaluated on every input in the dialog
 * @property {string} [className]
 */

/**
 * Opens a modal dialog; resolves true when confirmed, false when dismissed (button, Escape,
 * backdrop). Focus returns to the element that had it.
 * @param {DialogOptions} options
 * @returns {Promise<boolean>}
 */
export function openDialog({
  title,
  body,
  confirmLabel,
  cancelLabel = 'Close',
  danger = false,
  canConfirm = () => true,
  className = '',
}) {
  const opener = /** @type {HTMLElement | null} */ (document.activeElement);
  const labelOf = () => (typeof confirmLabel === 'function' ? confirmLabel() : confirmLabel);
  return new Promise((resolve) => {
    let confirmed = false;
    const confirm = /** @type {HTMLButtonElement} */ (
      h(`button.btn.${danger ? 'danger-solid' : 'primary'}`, { type: 'submit', value: 'confirm' }, labelOf())
    );
    const sync = () => {
      confirm.disabled = !canConfirm();
      confirm.textContent = labelOf();
    };
    const dialog = /** @type {HTMLDialogElement} */ (
      h(
        `dialog.app-dialog${className ? `.${className}` : ''}`,
        { 'aria-labelledby': 'dialog-title' },
        h(
          'form',
          {
            method: 'dialog',
            oninput: sync,
            onchange: sync,
            onsubmit: (/** @type {SubmitEvent} */ e) => {
              confirmed = /** @type {HTMLButtonElement | null} */ (e.submitter)?.value === 'confirm';
            },
          },
          h('h2', { id: 'dialog-title' }, title),
          h('div.dialog-body', {}, body),
          h(
            'div.dialog-actions',
            {},
            h('button.btn', { type: 'submit', value: 'cancel', formnovalidate: true }, cancelLabel),
            confirm,
          ),
        ),
      )
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      refocus(opener);
      resolve(confirmed);
    });
    dialog.addEventListener('click', (e) => {
      if (e.target === dialog && outside(dialog, /** @type {MouseEvent} */ (e))) dialog.close();
    });
    document.body.append(dialog);
    sync();
    dialog.showModal();
  });
}

/**
 * A click on a dialog's backdrop: outside its box.
 * @param {HTMLDialogElement} dialog
 * @param {MouseEvent} e
 */
export function outside(dialog, e) {
  const box = dialog.getBoundingClientRect();
  return e.clientX < box.left || e.clientX > box.right || e.clientY < box.top || e.clientY > box.bottom;
}

/**
 * Gives focus back to the element that opened a dialog; if the page was redrawn meanwhile, to its
 * successor with the same data-key.
 * @param {HTMLElement | null} opener
 */
export function refocus(opener) {
  if (!opener) return;
  if (document.contains(opener)) {
    opener.focus();
    return;
  }
  const key = opener.dataset.key;
  if (key)
    /** @type {HTMLElement | null} */ (document.querySelector(`[data-key="${CSS.escape(key)}"]`))?.focus();
}
