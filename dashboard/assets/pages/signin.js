// @ts-check
import { ApiError } from '../api.js';
import { h } from '../dom.js';

/**
 * The sign-in form: an API key (the same keys as /v1), checked before it is remembered.
 * @param {HTMLElement} main
 * @param {{ onSignIn(key: string): Promise<void> }} handlers
 */
export function mount(main, { onSignIn }) {
  const input = /** @type {HTMLInputElement} */ (
    h('input', {
      id: 'api-key',
      name: 'api-key',
      type: 'password',
      required: true,
      autocomplete: 'current-password',
      spellcheck: 'false',
      placeholder: 'fsk_…',
      'aria-describedby': 'api-key-help',
    })
  );
  const error = h('p.form-error', { id: 'signin-error', role: 'alert' });
  const button = /** @type {HTMLButtonElement} */ (
    h('button.btn.primary.wide', { type: 'submit' }, 'Sign in')
  );
  const form = h(
    'form.signin-card',
    {
      'aria-labelledby': 'signin-title',
      /** @param {SubmitEvent} event */
      async onsubmit(event) {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        button.disabled = true;
        button.textContent = 'Signing in…';
        error.textContent = '';
        try {
          await onSignIn(key);
        } catch (err) {
          error.textContent =
            err instanceof ApiError && err.status === 401
              ? 'That API key is not valid, or it was revoked.'
              : err instanceof Error
                ? err.message
                : String(err);
          input.setAttribute('aria-invalid', 'true');
          input.focus();
          input.select();
        } finally {
          button.disabled = false;
          button.textContent = 'Sign in';
        }
      },
    },
    h(
      'div.signin-brand',
      {},
      h('img', { src: '/assets/favicon.svg', alt: '', width: 40, height: 40 }),
      h('span', {}, 'fusillade'),
    ),
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p.muted', {}, 'Watch your batches, find failures and fetch results.'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    h('p.help', { id: 'api-key-help' }, 'The same key you use with the Batch API. It stays in this browser.'),
    error,
    button,
  );
  main.append(h('div.signin-page', {}, form));
  input.focus();
}
