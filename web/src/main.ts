// Entry point of the browser IDE (served by cloudcode-server from the API
// origin; see web/src/app for the page's parts).

import './styles/main.css';
import { startApp } from './app/app';

const root = document.getElementById('app');
if (root !== null) {
  startApp(root).catch((e: unknown) => {
    // The last resort: never a blank page.
    root.textContent = `The page failed to start: ${e instanceof Error ? e.message : String(e)}`;
    console.error(e);
  });
}
