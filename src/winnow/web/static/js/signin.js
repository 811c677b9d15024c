import { PREFIX, ApiError, api, saveSession, $ } from './common.js';

const params = new URLSearchParams(location.search);
const error = $('#signin-error');

function show(message) {
  error.textContent = message;
  error.hidden = !message;
}

// Why the console sent you here: a code from a fixed set, never text from the URL (a link could
// otherwise put any sentence on this page).
const REASONS = {
  'key-refused': 'Your key was refused (Unknown or revoked API key). Sign in with a valid key.',
  'signed-out': 'Signed out.',
};
show(Object.hasOwn(REASONS, params.get('reason') || '') ? REASONS[params.get('reason')] : '');

// Only a path inside the console: never an open redirect to another site.
function next() {
  const target = params.get('next') || '';
  return target.startsWith(`${PREFIX}/`) && !target.startsWith('//') ? target : `${PREFIX}/`;
}

$('#signin').addEventListener('submit', async (event) => {
  event.preventDefault();
  const key = $('#key').value.trim();
  show('');
  try {
    const budget = await api('/api/v1/usage/budget', { key });
    let admin = false;
    try {
      await api('/api/v1/keys', { key });
      admin = true;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 403) throw err;
    }
    saveSession(key, { name: budget.key, admin });
    location.assign(next());
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      show(`This key was refused: ${err.message}. Check that it is complete and has not been revoked.`);
    } else {
      show(`Could not sign in: ${err.message}`);
    }
  }
});
