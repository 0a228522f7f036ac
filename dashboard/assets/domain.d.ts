// The type of /assets/domain.js, which the server generates from src/domain at run time.
declare const domain: typeof import('../../src/server/dashboard-domain.js').DASHBOARD_DOMAIN;
export default domain;
