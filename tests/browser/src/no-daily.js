// Stands in for @daily-co/daily-js in the test bundle. The transport's default
// media manager (DailyMediaManager) would load code from the internet; the test
// page gives the transport its own media manager instead, so this is never
// called. If it ever is, the test fails loudly rather than going online.
export default class Daily {
  static createCallObject() {
    throw new Error("daily-js is not available in the offline test bundle");
  }
  static supportedBrowser() {
    return { supported: false };
  }
}
