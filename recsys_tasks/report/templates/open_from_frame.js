// Airflow shows the page in a sandboxed iframe that may not open tabs itself: a link meant for a new
// tab is opened by the (same-origin) Airflow page around it; anywhere else the link works as usual.
document.addEventListener('click',function(e){var a=e.target.closest('a[target=_blank]');
if(!a||window.top===window)return;try{var d=window.top.document,x=d.createElement('a');
x.href=a.href;x.target='_blank';x.rel='noopener';d.body.appendChild(x);x.click();x.remove();
e.preventDefault();}catch(err){}});
